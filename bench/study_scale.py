"""How the cost of one trial's bookkeeping grows with the study: suggest + report + record.

Fills a PostgreSQL (or any) study with finished trials through Optuna's API, then times our
searcher's cycle at each size: StudySearcher.suggest (TPE over the whole history) -> one
intermediate value -> tell, plus the ledger rows of the trial.

Usage:  python bench/study_scale.py [--db postgresql+psycopg://postgres@127.0.0.1:5432/test] [--sizes 100 1000 5000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import optuna  # noqa: E402
from optuna.trial import create_trial  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from orchestrator.search.search_space import PRESET_DIR, SearchSpace, read_yaml_mapping  # noqa: E402
from orchestrator.search.searcher import StudySearcher  # noqa: E402
from orchestrator.storage import db  # noqa: E402
from orchestrator.storage.ledger import Ledger  # noqa: E402
from orchestrator.storage.study import open_storage  # noqa: E402
from orchestrator.sweep.config import load_sweep  # noqa: E402


def fill(study: optuna.Study, distributions: dict, count: int, rng: np.random.Generator) -> None:
    sampler = optuna.samplers.RandomSampler(seed=int(rng.integers(1 << 30)))
    trials = []
    for _ in range(count):
        params = {name: sampler.sample_independent(study, None, name, d) for name, d in distributions.items()}
        value = float(rng.uniform(0.3, 0.8))
        trials.append(create_trial(params=params, distributions=distributions, value=value, intermediate_values={1: value}))
    study.add_trials(trials)


PHASES = ("total", "suggest", "report+tell", "ledger")


def time_cycles(searcher: StudySearcher, ledger: Ledger, cycles: int) -> dict[str, list[float]]:
    """Seconds per cycle and per phase: suggest (Optuna ask: sampler + storage writes),
    report+tell (Optuna storage), ledger (our rows)."""
    times: dict[str, list[float]] = {phase: [] for phase in PHASES}
    for _ in range(cycles):
        started = time.perf_counter()
        trial_id = uuid.uuid4().hex[:8]
        searcher.suggest(trial_id)
        trial = searcher.open_trials.pop(trial_id)
        suggested = time.perf_counter()
        ledger.trial_started(trial._trial_id, trial.number, trial_id, None, cpu=1, gpu=0, checkpoint_path=None)
        ledger_start = time.perf_counter()
        trial.report(0.5, 1)
        searcher.study.tell(trial, 0.5)
        told = time.perf_counter()
        ledger.trial_finished(trial.number, "COMPLETE", "completed")
        ended = time.perf_counter()
        times["total"].append(ended - started)
        times["suggest"].append(suggested - started)
        times["report+tell"].append(told - ledger_start)
        times["ledger"].append(ledger_start - suggested + ended - told)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--cycles", type=int, default=10)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    space = SearchSpace.model_validate(read_yaml_mapping(PRESET_DIR / "text_classification.yaml"))
    distributions = space.distributions()
    name = f"scale-{uuid.uuid4().hex[:8]}"
    storage = open_storage(args.db)
    engine = db.create_engine(args.db)
    db.upgrade(engine)
    rng = np.random.default_rng(0)
    table = Table(title=f"One suggest+report+record cycle vs study size ({args.cycles} cycles each; TPE multivariate, constant liar)")
    for column in ("finished trials", "median ms", "p90 ms", *(f"{phase} ms" for phase in PHASES[1:]), "fill s"):
        table.add_column(column, justify="right")
    filled = 0
    try:
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize",
                                    sampler=optuna.samplers.TPESampler(multivariate=True, constant_liar=True, seed=0))
        ledger = Ledger(engine, name)
        ledger.start_invocation(load_sweep(Path(__file__).resolve().parent.parent / "sweeps" / "demo.yaml").model_copy(update={"name": name}))
        searcher = StudySearcher(study, space, "val_f1_macro", "max")
        for size in sorted(args.sizes):
            started = time.perf_counter()
            fill(study, distributions, size - filled, rng)
            fill_s = time.perf_counter() - started
            filled = len(study.get_trials(deepcopy=False))
            time_cycles(searcher, ledger, 2)  # warm the storage cache
            times = time_cycles(searcher, ledger, args.cycles)
            filled = len(study.get_trials(deepcopy=False))
            ms = {phase: statistics.median(values) * 1000 for phase, values in times.items()}
            table.add_row(
                str(filled), f"{ms['total']:.1f}", f"{np.percentile(times['total'], 90) * 1000:.1f}",
                *(f"{ms[phase]:.1f}" for phase in PHASES[1:]), f"{fill_s:.1f}",
            )
            Console().print(f"{filled} trials: median {ms['total']:.1f} ms")
    finally:
        optuna.delete_study(study_name=name, storage=storage)
        from sqlalchemy import text

        with engine.begin() as connection:
            for statement in ("DELETE FROM hpo_trials WHERE study_name = :n", "DELETE FROM hpo_invocations WHERE sweep_id IN (SELECT id FROM hpo_sweeps WHERE name = :n)", "DELETE FROM hpo_sweeps WHERE name = :n"):
                connection.execute(text(statement), {"n": name})
    Console().print(table)


if __name__ == "__main__":
    main()
