"""Record what `make demo` prints for its seed, and write it into the README (`make demo-record`).

Runs the demo sweep (`sweeps/demo.yaml`, unchanged but for where it writes: a fresh temporary
folder, so the run starts from a clean state and leaves the repository's hpo.db alone) as
`hpo run --json`, the way `make demo` runs it, and writes:

- ``tests/fixtures/demo_result.json``: the run's `--json` document, every search trial's
  parameters and value, every confirmation run's value, the SHA-256 of the files that define the
  demo, and the command and machine that produced it;
- the README's demo output block (between ``<!-- demo-output -->`` and the next fence's end): what
  `hpo run` prints for that result.

``tests/test_readme_demo.py`` fails when the README's block or prose no longer matches the
fixture, when the demo's files changed since it was recorded, or (a slow test) when one of its
trials no longer scores what it recorded: then run ``make demo-record`` (several minutes on two
cores), update the prose under the block with the numbers it prints, and commit all three.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "sweeps" / "demo.yaml"
FIXTURE = ROOT / "tests" / "fixtures" / "demo_result.json"
README = ROOT / "README.md"
MARKER = "<!-- demo-output: written by bench/demo_record.py from tests/fixtures/demo_result.json -->"
COMMAND = "HF_HUB_OFFLINE=1 .venv/bin/hpo run sweeps/demo.yaml --json  (make demo-record: from a clean state, storage in a temporary folder)"
# What make demo prints from the repository root for the sweep's storage (sqlite:///../hpo.db beside sweeps/).
README_STUDY_DB, README_MLFLOW = "sqlite:///hpo.db", "sqlite:///mlruns.db"


def demo_definition() -> dict:
    """What decides the demo's numbers besides the code: the sweep as parsed (comments and where it
    writes left out) and its search space file as parsed."""
    sweep = yaml.safe_load(DEMO.read_text())
    sweep.pop("storage", None)
    space = (DEMO.parent / sweep["search_space"]).resolve()
    return {"sweep": sweep, "search_space": yaml.safe_load(space.read_text())}


def demo_fingerprint() -> str:
    return hashlib.sha256(json.dumps(demo_definition(), sort_keys=True).encode()).hexdigest()


def run_demo(folder: Path) -> dict:
    """`hpo run` of the demo sweep with its storage in ``folder``; progress streams to stderr."""
    sweep = yaml.safe_load(DEMO.read_text())
    sweep["search_space"] = str((DEMO.parent / sweep["search_space"]).resolve())
    sweep["storage"] = {"study_db": "sqlite:///hpo.db", "mlflow": "sqlite:///mlruns.db", "results_dir": "hpo_runs"}
    (folder / "demo.yaml").write_text(yaml.safe_dump(sweep, sort_keys=False))
    hpo = shutil.which("hpo", path=str(Path(sys.executable).parent)) or "hpo"
    done = subprocess.run([hpo, "run", "demo.yaml", "--json"], cwd=folder, stdout=subprocess.PIPE, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the demo exited {done.returncode}; nothing recorded")
    return json.loads(done.stdout)


def study_trials(folder: Path, study_name: str) -> tuple[list[dict], dict[str, list[float]]]:
    """Every search trial (number, state, value, params) and each confirmed trial's confirmation values."""
    import optuna

    from orchestrator.answer.confirm import confirmation_study_name
    from orchestrator.storage.trial_attrs import CONFIRMS

    storage = f"sqlite:///{folder / 'hpo.db'}"
    search = optuna.load_study(study_name=study_name, storage=storage)
    trials = [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params} for t in search.get_trials(deepcopy=False)]
    confirmations: dict[str, list[float]] = {}
    confirmation = optuna.load_study(study_name=confirmation_study_name(study_name), storage=storage)
    for trial in confirmation.get_trials(deepcopy=False):
        if trial.value is not None:
            confirmations.setdefault(str(trial.user_attrs[CONFIRMS]), []).append(trial.value)
    return trials, confirmations


def record() -> dict:
    import torch

    with tempfile.TemporaryDirectory(prefix="hpo-demo-") as folder:
        result = run_demo(Path(folder))
        (FIXTURE.parent / "demo_run.partial.json").write_text(json.dumps(result))  # kept if what follows fails
        trials, confirmations = study_trials(Path(folder), result["study_name"])
    return {
        "command": COMMAND,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__},
        "demo_sha256": demo_fingerprint(),
        "result": result,
        "trials": trials,
        "confirmations": confirmations,
    }


def printed(fixture: dict) -> str:
    """What `hpo run sweeps/demo.yaml` prints on stdout for the recorded result, run from the repository root."""
    from rich.console import Console

    from orchestrator.answer.settle import Answer
    from orchestrator.cli import output
    from orchestrator.exit_codes import ExitStatus
    from orchestrator.run.result import SweepResult
    from orchestrator.storage.summary import TrialSummary

    document = dict(fixture["result"])
    document.pop("ok", None)
    result = SweepResult(**{
        **document,
        "best": TrialSummary(**document["best"]) if document["best"] else None,
        "top": [TrialSummary(**trial) for trial in document["top"]],
        "exit_status": ExitStatus(document["exit_status"]),
        "parent_run_id": "PARENT_RUN_ID",
        "study_db": README_STUDY_DB,
        "mlflow_uri": README_MLFLOW,
        "answer": Answer.from_dict(document["answer"]).to_dict() if document["answer"] else None,
    })
    buffer = io.StringIO()
    console, output.out = output.out, Console(file=buffer, width=160, color_system=None)  # as piped: no colour, wide
    try:
        output.print_result(result)
    finally:
        output.out = console
    return "\n".join(line.rstrip() for line in buffer.getvalue().strip("\n").splitlines())


def readme_block(readme: str) -> str:
    """The README's demo output block: the fenced block after :data:`MARKER`."""
    match = re.search(re.escape(MARKER) + r"\n```\n(.*?)\n```", readme, re.S)
    if match is None:
        raise ValueError(f"README.md has no demo output block after {MARKER}")
    return match.group(1)


def write_readme(fixture: dict) -> None:
    readme = README.read_text()
    old = readme_block(readme)
    README.write_text(readme.replace(f"{MARKER}\n```\n{old}\n```", f"{MARKER}\n```\n{printed(fixture)}\n```", 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme-only", action="store_true", help="rewrite the README's block from the recorded fixture; run nothing")
    args = parser.parse_args()
    if args.readme_only:
        fixture = json.loads(FIXTURE.read_text())
    else:
        FIXTURE.parent.mkdir(parents=True, exist_ok=True)
        fixture = record()
        FIXTURE.write_text(json.dumps(fixture, indent=2) + "\n")
        (FIXTURE.parent / "demo_run.partial.json").unlink(missing_ok=True)
    write_readme(fixture)
    answer = fixture["result"]["answer"] or {}
    print(f"recorded {FIXTURE.relative_to(ROOT)} and README.md's demo block; now check the prose under it:")
    print(f"  best search trial {fixture['result']['best']['number']} ({fixture['result']['best']['value']:.4f}); "
          f"answer trial {answer.get('trial')}; confirmed by search trial: "
          + ", ".join(f"trial {number}: {sum(values) / len(values):.4f}" for number, values in fixture["confirmations"].items()))


if __name__ == "__main__":
    main()
