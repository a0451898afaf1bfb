"""How much compute each search needs to find a good configuration, measured with many seeds by
replaying searches on recorded learning curves instead of training.

The table (``bench/curves/tweets_minilm.csv``, written by ``bench/record_curves.py``) holds the
validation macro-F1 of 64+ configurations of the ``text_classification`` preset at 4 evaluations
per epoch for 4 epochs, for 2 training seeds each (MiniLM-L6 on a fixed split of the bundled
tweets; evaluations within an epoch score a fixed stratified subset of the validation split, as
``trial.quick_val_size`` does).

Each replayed search runs the product's own parts: the sampler from its registry proposes
through its ``StudySearcher``; the nearest recorded configuration answers (nearest neighbour in
the space scaled to [0, 1], log scale where the preset searches on a log scale; no surrogate
model), with the curve of one of its training seeds drawn at random; the scheduler from the
product's registry (the same classes, settings and warmup rule) sees every report in the order
Ray Tune's controller hands them over and decides when the trial stops; every report is an
Optuna intermediate value, and ``orchestrator.run.outcome.classify`` decides each trial's state and
value, which the study is told. Trials run one at a time (``max_concurrent: 1``).

Compute is counted in trial-epochs: the epochs of training a run spent (a trial stopped at a
quarter of an epoch costs 0.25), evaluations not included. A run reaches the target when a
trial that completed has a value >= 98 % of the table's best configuration (best mean over
seeds of the trial value), and is charged the compute spent up to that trial's end.

Usage:  python bench/search_replay.py [--seeds 50 --budget 96 --arms ... --json]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import optuna  # noqa: E402

from orchestrator.run.outcome import classify  # noqa: E402
from orchestrator.search.registries import SAMPLERS, SCHEDULERS, SamplerInputs  # noqa: E402
from orchestrator.search.search_space import CategoricalParam, FloatParam, SearchSpace  # noqa: E402
from orchestrator.storage.study import startup_trials  # noqa: E402
from orchestrator.sweep.sweep_sections import SchedulerConfig  # noqa: E402
from trials.result_keys import EPOCH, FINAL, INTERIM, STEP, WARMING_UP  # noqa: E402

HERE = Path(__file__).resolve().parent
TABLE = HERE / "curves" / "tweets_minilm.csv"
PRESET = Path(__file__).resolve().parent.parent / "search_spaces" / "text_classification.yaml"
METRIC = "val_f1_macro"
TARGET_SHARE = 0.98
TOP_QUARTER = "one-epoch-then-top-quarter"  # Egele et al. 2023: every trial one epoch, the best quarter to the end


@dataclass(frozen=True)
class Arm:
    name: str
    sampler: str
    scheduler: str  # a name in the product's SCHEDULERS, or TOP_QUARTER
    evals_per_epoch: int = 1
    grace_period: float = 1.0
    reduction_factor: float = 3.0


ARMS = {arm.name: arm for arm in (
    Arm("random+fifo", "random", "fifo"),
    Arm("tpe+fifo", "tpe", "fifo"),
    Arm("tpe+asha", "tpe", "asha"),
    Arm("tpe+asha grace2", "tpe", "asha", grace_period=2.0),
    Arm("tpe+asha grace2 rf2", "tpe", "asha", grace_period=2.0, reduction_factor=2),
    Arm("tpe+median", "tpe", "median"),
    Arm("tpe+asha@4", "tpe", "asha", evals_per_epoch=4, grace_period=0.25),
    Arm("tpe+asha@4 rf2", "tpe", "asha", evals_per_epoch=4, grace_period=0.25, reduction_factor=2),
    Arm("tpe+asha@4 rf4", "tpe", "asha", evals_per_epoch=4, grace_period=0.25, reduction_factor=4),
    Arm("tpe+asha@4 grace0.5", "tpe", "asha", evals_per_epoch=4, grace_period=0.5),
    Arm("tpe+hyperband@4", "tpe", "hyperband", evals_per_epoch=4, grace_period=0.25),
    Arm("tpe+median@4", "tpe", "median", evals_per_epoch=4, grace_period=0.25),
    Arm("random+asha@4", "random", "asha", evals_per_epoch=4, grace_period=0.25),
    Arm("random+" + TOP_QUARTER, "random", TOP_QUARTER),
    Arm("tpe+" + TOP_QUARTER, "tpe", TOP_QUARTER),
    Arm("gp+asha@4", "gp", "asha", evals_per_epoch=4, grace_period=0.25),
)}
SLOW_ARMS = ["gp+asha@4"]  # Optuna's GP refits on every suggestion: about a minute per replayed search
BASELINE = "random+fifo"  # the peers' default: Ray Tune's random search without early stopping
SMOKE_ARMS = ["random+fifo", "tpe+asha@4"]


@dataclass(frozen=True)
class Report:
    epoch: float
    step: int  # evaluations within the trial so far (1, 2, ...)
    score: float
    interim: int
    warming_up: int


class CurveTable:
    """The recorded curves, and the nearest recorded configuration to any point of the space."""

    def __init__(self, path: Path, space: SearchSpace) -> None:
        rows = list(csv.DictReader(path.open()))
        self.space = space
        self.names = list(space.params)
        self.evals_per_epoch = max(int(float(row["step"])) for row in rows) // max(int(round(float(row["epoch"]))) for row in rows)
        self.max_epochs = max(int(round(float(row["epoch"]))) for row in rows)
        curves: dict[tuple[int, int], list[Report]] = defaultdict(list)
        params: dict[int, dict] = {}
        for row in rows:
            key = (int(row["config_id"]), int(row["seed"]))
            curves[key].append(Report(float(row["epoch"]), int(row["step"]), float(row["val_f1_macro"]), int(row["interim"]), int(row["warming_up"])))
            params[key[0]] = {name: _typed(space.params[name], row[name]) for name in self.names}
        complete = {key: sorted(reports, key=lambda r: r.step) for key, reports in curves.items()
                    if len(reports) == self.max_epochs * self.evals_per_epoch}
        self.config_ids = sorted({config for config, _ in complete})
        self.seeds = sorted({seed for _, seed in complete})
        self.config_ids = [c for c in self.config_ids if all((c, s) in complete for s in self.seeds)]
        self.curves = complete
        self.params = {c: params[c] for c in self.config_ids}
        self._points = np.array([self.scaled(self.params[c]) for c in self.config_ids])

    def scaled(self, params: dict) -> list[float]:
        coordinates = []
        for name in self.names:
            param, value = self.space.params[name], params[name]
            if isinstance(param, CategoricalParam):
                coordinates.append(param.choices.index(value) / max(1, len(param.choices) - 1))
            else:
                scale = math.log if getattr(param, "log", False) else float
                coordinates.append((scale(value) - scale(param.low)) / (scale(param.high) - scale(param.low)))
        return coordinates

    def nearest(self, params: dict) -> int:
        distances = ((self._points - np.array(self.scaled(params))) ** 2).sum(axis=1)
        return self.config_ids[int(np.argmin(distances))]

    def reports(self, config_id: int, seed: int, evals_per_epoch: int) -> list[Report]:
        """The curve as a trial evaluating ``evals_per_epoch`` times per epoch would report it."""
        every = self.evals_per_epoch // evals_per_epoch
        kept = [r for r in self.curves[config_id, seed] if r.step % every == 0]
        return [Report(r.epoch, index, r.score, r.interim, r.warming_up) for index, r in enumerate(kept, start=1)]

    def value(self, config_id: int, seed: int) -> float:
        """What the trial is worth when it runs to its end: its best epoch's end (as classify decides)."""
        return max(r.score for r in self.curves[config_id, seed] if not r.interim)

    def mean_value(self, config_id: int) -> float:
        return float(np.mean([self.value(config_id, seed) for seed in self.seeds]))

    @property
    def best_mean(self) -> float:
        return max(self.mean_value(c) for c in self.config_ids)


def _typed(param, text: str):
    if isinstance(param, CategoricalParam):
        return next(choice for choice in param.choices if str(choice) == text or (isinstance(choice, (int, float)) and float(choice) == float(text)))
    return float(text) if isinstance(param, FloatParam) else int(float(text))


class _Trial:
    """What Ray's schedulers read of a trial: its id (and a hashable key)."""

    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id


class _Controller:
    """What Ray's schedulers ask of the trial runner: the trials waiting to run (none: one at a time)."""

    def get_live_trials(self) -> list:
        return []


@dataclass
class Run:
    arm: str
    seed: int
    spent: float  # trial-epochs in all
    trials: int
    reached_at: float | None  # trial-epochs when a completed trial first reached the target
    best: float  # best completed trial value within the budget
    chosen_mean: float  # the table's mean over seeds of the configuration that best value came from


def replay(table: CurveTable, arm: Arm, seed: int, budget: float, target: float) -> Run:
    if arm.scheduler == TOP_QUARTER:
        return _replay_top_quarter(table, arm, seed, budget, target)
    from orchestrator.search.searcher import StudySearcher

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    np.random.seed(seed)  # Ray's Hyperband draws each trial's bracket from NumPy's global generator
    n_trials = int(budget // table.max_epochs)
    sampler = SAMPLERS[arm.sampler](SamplerInputs(seed, _startup(n_trials), table.space))
    study = optuna.create_study(direction="maximize", sampler=sampler)
    searcher = StudySearcher(study, table.space, METRIC, "max")
    scheduler = SCHEDULERS[arm.scheduler](
        SchedulerConfig(name=arm.scheduler, grace_period=arm.grace_period, reduction_factor=arm.reduction_factor, min_samples_required=3),
        table.max_epochs,
    )
    scheduler.set_search_properties(METRIC, "max")
    controller = _Controller()
    rng = np.random.default_rng(seed)
    spent, count, reached_at, best, chosen = 0.0, 0, None, -math.inf, None
    while spent < budget:
        trial_id = str(count)
        config = searcher.suggest(trial_id)
        optuna_trial = searcher.open_trials.pop(trial_id)
        config_id = table.nearest(config)
        reports = table.reports(config_id, int(rng.choice(table.seeds)), arm.evals_per_epoch)
        trial = _Trial(trial_id)
        scheduler.on_trial_add(controller, trial)
        history = []
        for index, report in enumerate(reports):
            last = index == len(reports) - 1
            result = {METRIC: report.score, EPOCH: report.epoch, STEP: report.step, WARMING_UP: report.warming_up,
                      FINAL: int(last), **({INTERIM: 1} if report.interim else {})}
            optuna_trial.report(report.score, report.step)  # as the recorder does with every result
            history.append(result)
            # as Ray Tune's TuneController: every result goes to the scheduler; a STOP, or the
            # trial's own end, then tells the scheduler the trial completed with its last result
            if scheduler.on_trial_result(controller, trial, result) == "STOP" or last:
                scheduler.on_trial_complete(controller, trial, result)
                break
        outcome = classify(history, METRIC, "max", None)
        study.tell(optuna_trial, outcome.value, state=outcome.state)
        spent += history[-1][EPOCH]
        count += 1
        if outcome.value is not None and outcome.value > best:
            best, chosen = outcome.value, config_id
        if reached_at is None and outcome.value is not None and outcome.value >= target:
            reached_at = spent
    return Run(arm.name, seed, spent, count, reached_at, best, table.mean_value(chosen) if chosen is not None else math.nan)


def _replay_top_quarter(table: CurveTable, arm: Arm, seed: int, budget: float, target: float) -> Run:
    """Train n configurations one epoch each, then continue the best quarter of them to the end,
    best first; n spends the budget: n + n/4 * (max_epochs - 1) = budget."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    n = max(4, int(budget / (1 + (table.max_epochs - 1) / 4)))
    sampler = SAMPLERS[arm.sampler](SamplerInputs(seed, _startup(n), table.space))
    study = optuna.create_study(direction="maximize", sampler=sampler)
    rng = np.random.default_rng(seed)
    first: list[tuple[float, int, int]] = []
    for _ in range(n):
        trial = study.ask(table.space.distributions())
        config_id = table.nearest({**table.space.fixed, **trial.params})
        training_seed = int(rng.choice(table.seeds))
        score = table.reports(config_id, training_seed, 1)[0].score
        study.tell(trial, score)  # the sampler learns from one-epoch scores
        first.append((score, config_id, training_seed))
    spent, reached_at, best, chosen = float(n), None, -math.inf, None
    for _score, config_id, training_seed in sorted(first, reverse=True)[: max(1, n // 4)]:
        spent += table.max_epochs - 1
        value = table.value(config_id, training_seed)
        if value > best:
            best, chosen = value, config_id
        if reached_at is None and value >= target:
            reached_at = spent
    return Run(arm.name, seed, spent, n, reached_at, best, table.mean_value(chosen))


def _startup(n_trials: int) -> int:
    """The product's rule for random trials before the model-based sampler starts."""
    return startup_trials(SimpleNamespace(sampler=SimpleNamespace(n_startup_trials=None), budget=SimpleNamespace(n_trials=n_trials)))


_TABLE: CurveTable | None = None


def _run(args: tuple) -> Run:
    global _TABLE
    path, arm, seed, budget = args
    if _TABLE is None:
        _TABLE = load_table(path)
    return replay(_TABLE, ARMS[arm], seed, budget, TARGET_SHARE * _TABLE.best_mean)


def load_table(path: Path) -> CurveTable:
    import yaml

    space = SearchSpace.model_validate(yaml.safe_load(PRESET.read_text()))
    return CurveTable(path, space)


def median_to_target(runs: list[Run]) -> float:
    """Median trial-epochs to the target; runs that never reached it count as infinitely long."""
    return float(np.median([run.reached_at if run.reached_at is not None else math.inf for run in runs]))


def bootstrap(runs: list[Run], baseline: list[Run], resamples: int = 2000, seed: int = 0) -> dict:
    """90 % intervals of the arm's median and of its ratio to the baseline's median."""
    rng = np.random.default_rng(seed)
    mine = np.array([run.reached_at if run.reached_at is not None else math.inf for run in runs])
    theirs = np.array([run.reached_at if run.reached_at is not None else math.inf for run in baseline])
    medians = np.array([np.median(rng.choice(mine, len(mine))) for _ in range(resamples)])
    base = np.array([np.median(rng.choice(theirs, len(theirs))) for _ in range(resamples)])
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = medians / base
    ratios = np.where(np.isnan(ratios), math.inf, ratios)
    def interval(values: np.ndarray) -> list[float]:  # no interpolation: the values may be infinite
        return [float(np.quantile(values, 0.05, method="lower")), float(np.quantile(values, 0.95, method="higher"))]

    with np.errstate(invalid="ignore"):
        ratio = median_to_target(runs) / median_to_target(baseline)
    return {"median_interval": interval(medians), "ratio": ratio, "ratio_interval": interval(ratios)}


def summarise(runs: list[Run], arms: list[str]) -> list[dict]:
    by_arm = defaultdict(list)
    for run in runs:
        by_arm[run.arm].append(run)
    rows = []
    for name in arms:
        mine = by_arm[name]
        rows.append({
            "arm": name,
            "median_to_target": median_to_target(mine),
            **bootstrap(mine, by_arm[BASELINE]),
            "reached": sum(run.reached_at is not None for run in mine) / len(mine),
            "best_at_budget": float(np.mean([run.best for run in mine])),
            "chosen_mean": float(np.nanmean([run.chosen_mean for run in mine])),
            "trials": float(np.mean([run.trials for run in mine])),
        })
    return rows


def _epochs(value: float) -> str:
    return ">budget" if math.isinf(value) else f"{value:.1f}"


def _ratio(value: float) -> str:
    return "n/a" if math.isnan(value) else (">" if math.isinf(value) else f"{value:.2f}")


def print_table(rows: list[dict], table: CurveTable, args) -> None:
    from rich.console import Console
    from rich.table import Table

    target = TARGET_SHARE * table.best_mean
    out = Table(title=f"{args.seeds} replayed searches per arm · budget {args.budget:g} trial-epochs · {len(table.config_ids)} recorded configurations "
                      f"x {len(table.seeds)} seeds · target {TARGET_SHARE:.0%} of the best mean F1 {table.best_mean:.4f} = {target:.4f}")
    for column in ("arm", "trials", "median trial-epochs to target [90% CI]", f"x {BASELINE} [90% CI]", "reached",
                   "best F1 at budget", "chosen config's mean F1"):
        out.add_column(column, justify="right")
    for row in rows:
        low, high = row["median_interval"]
        ratio_low, ratio_high = row["ratio_interval"]
        out.add_row(row["arm"], f"{row['trials']:.1f}", f"{_epochs(row['median_to_target'])} [{_epochs(low)}, {_epochs(high)}]",
                    f"{_ratio(row['ratio'])} [{_ratio(ratio_low)}, {_ratio(ratio_high)}]", f"{row['reached']:.0%}",
                    f"{row['best_at_budget']:.4f}", f"{row['chosen_mean']:.4f}")
    Console(width=200).print(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", type=Path, default=TABLE)
    parser.add_argument("--seeds", type=int, default=50, help="replayed searches per arm")
    parser.add_argument("--budget", type=float, default=96, help="trial-epochs per search")
    parser.add_argument("--arms", nargs="+", default=[arm for arm in ARMS if arm not in SLOW_ARMS], choices=list(ARMS),
                        help=f"default: all but {', '.join(SLOW_ARMS)}")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--smoke", action="store_true", help=f"3 seeds of {' and '.join(SMOKE_ARMS)} on a budget of 24")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    args = parser.parse_args()
    if args.smoke:
        args.seeds, args.arms, args.budget = 3, SMOKE_ARMS, 24.0
    arms = [BASELINE, *[arm for arm in args.arms if arm != BASELINE]]
    table = load_table(args.table)
    jobs = [(args.table, arm, seed, args.budget) for arm in arms for seed in range(args.seeds)]
    with ProcessPoolExecutor(args.workers) as pool:
        runs = list(pool.map(_run, jobs, chunksize=max(1, len(jobs) // (8 * args.workers))))
    rows = summarise(runs, arms)
    if args.json:
        print(json.dumps({"settings": {"seeds": args.seeds, "budget": args.budget, "target": TARGET_SHARE * table.best_mean,
                                       "configurations": len(table.config_ids), "training_seeds": table.seeds},
                          "rows": rows, "runs": [asdict(run) for run in runs]}, allow_nan=True))
    else:
        print_table(rows, table, args)


if __name__ == "__main__":
    main()
