"""``python -m orchestrator.cli``: the ``hpo`` command (how a submitted job runs it on the head node)."""

import sys

from orchestrator.cli import main

sys.exit(main())
