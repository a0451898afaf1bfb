"""``python -m orchestrator.cli``: the ``hpo`` command (how a submitted job runs it on the head node)."""

from orchestrator.cli import main

main()  # exits with the command's exit code
