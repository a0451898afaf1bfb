"""The GPU path, proved in one command the day a GPU machine is at hand (at most ``--minutes`` 8).

Every step runs real sweeps through the product (``run_sweep``: Ray Tune, the study database,
MLflow) on the bundled MiniLM and tweets, on one Ray started once, and adds a row to the table:

  cuda           a CUDA device is visible (its name, memory, bf16 support)
  share 0.25     4 trials with resources.gpu 0.25 run at once on the one GPU; GPU busy % sampled
                 with nvidia-smi during the sweep
  bf16 / fp16    one trial each with trial.precision bf16 / fp16: COMPLETE, training loss finite,
                 F1 above the majority-class baseline
  checkpointing  one trial with trial.gradient_checkpointing off, one on: peak CUDA memory of each
  lora           one LoRA trial on CUDA: COMPLETE, F1 above the baseline
  oom retry      one trial of batch 2,048 with the trial's allocator capped at 1.5 GiB: it runs out
                 of memory, retries with smaller passes (gradient accumulation) and ends COMPLETE
  curves         with the time left, bench/record_curves.py on 4,000 training rows (an epoch is
                 250 steps at batch 16) into a second curve table for bench/search_replay.py;
                 it resumes, so a later run adds to it

``--dry-run`` runs the same steps on CPU at tiny sizes (the suite runs it): the CUDA-only steps
(cuda, bf16, fp16, oom retry) are marked skipped and no F1 is judged. Exit 0 when no step failed.

Usage:  python bench/gpu_check.py [--minutes 8] [--curves-out bench/curves/tweets_minilm_4000.csv]
        python bench/gpu_check.py --dry-run
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

OOM_BATCH, OOM_CAP_GIB = 2048, 1.5
LORA = {"method": "lora", "lora_rank": 8, "learning_rate": {"type": "float", "low": 5e-4, "high": 1e-3, "log": True}}
CURVES_OUT = ROOT / "bench" / "curves" / "tweets_minilm_4000.csv"


@dataclass(frozen=True)
class Sizes:
    train: int
    val: int
    max_length: int
    epochs: int
    share_trials: int  # trials at once in the sharing step


GPU_SIZES = Sizes(train=2000, val=500, max_length=64, epochs=2, share_trials=4)
DRY_SIZES = Sizes(train=48, val=24, max_length=16, epochs=1, share_trials=2)


@dataclass
class Row:
    step: str
    status: str  # ok, FAIL, skipped
    detail: str
    seconds: float = 0.0


@dataclass
class Check:
    dry_run: bool
    sizes: Sizes
    workdir: Path
    rows: list[Row] = field(default_factory=list)

    def sweep(self, name: str, *, trials: int = 1, concurrent: int = 1, gpu: float = 1.0, trial: dict | None = None, fixed: dict | None = None):
        from orchestrator.sweep.config import parse_sweep

        space = {"learning_rate": {"type": "float", "low": 1e-4, "high": 2e-4, "log": True},
                 "batch_size": 16, **(fixed or {})}
        raw = {
            "name": name,
            "model": "bundled:minilm-l6",
            "data": {"source": "bundled:tweets-sentiment", "max_length": self.sizes.max_length,
                     "train_size": self.sizes.train, "val_size": self.sizes.val},
            "search_space": space,
            "trial": {"max_epochs": self.sizes.epochs, **(trial or {})},
            "budget": {"n_trials": trials, "max_concurrent": concurrent},
            "sampler": {"name": "random", "seed": 0},
            "resources": {"cpu": 1} if self.dry_run else {"cpu": max(1, (os.cpu_count() or 1) // concurrent), "gpu": gpu},
            "storage": {"study_db": f"sqlite:///{self.workdir}/{name}.db", "mlflow": f"sqlite:///{self.workdir}/mlruns.db",
                        "results_dir": str(self.workdir / "runs")},
        }
        return parse_sweep(raw, ROOT)

    def add(self, step: str, status: str, detail: str, started: float | None = None) -> None:
        self.rows.append(Row(step, status, detail, time.perf_counter() - started if started else 0.0))

    def skip(self, step: str, why: str = "CUDA only (dry run on CPU)") -> None:
        self.add(step, "skipped", why)


def run(config, trial_function=None):
    """Run the sweep; return the result, its study's trials and their MLflow runs (metrics, tags)."""
    import optuna
    from mlflow import MlflowClient

    from orchestrator.run.runner import RunOptions, run_sweep
    from orchestrator.storage.trial_attrs import MLFLOW_RUN_ID

    result = run_sweep(config, RunOptions(trial_function=trial_function))
    trials = optuna.load_study(study_name=config.name, storage=config.storage.study_db).get_trials(deepcopy=False)
    client = MlflowClient(config.storage.mlflow)
    runs = [client.get_run(t.user_attrs[MLFLOW_RUN_ID]).data for t in trials if MLFLOW_RUN_ID in t.user_attrs]
    return result, trials, runs


def measured_trial(peak_file: Path, memory_cap_gib: float | None = None):
    """The product's trial (trials.entrypoint.run_trial) with its peak CUDA memory written to
    ``peak_file``, and its allocator capped at ``memory_cap_gib`` when given."""

    def trial(config, settings, data):
        import torch

        from trials.entrypoint import run_trial

        on_gpu = torch.cuda.is_available()
        if on_gpu:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            if memory_cap_gib:
                torch.cuda.set_per_process_memory_fraction(memory_cap_gib * 2**30 / torch.cuda.get_device_properties(0).total_memory)
        try:
            run_trial(config, settings, data)
        finally:
            if on_gpu:
                peak_file.write_text(str(torch.cuda.max_memory_allocated()))
                torch.cuda.set_per_process_memory_fraction(1.0)
                torch.cuda.empty_cache()

    return trial


class BusySampler:
    """GPU utilisation % from nvidia-smi every half second, in a thread; nothing where there is none."""

    def __init__(self) -> None:
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> BusySampler:
        if shutil.which("nvidia-smi"):
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            done = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", "0"],
                                  capture_output=True, text=True)
            if done.returncode == 0 and done.stdout.strip().isdigit():
                self.samples.append(int(done.stdout.strip()))

    def summary(self) -> str:
        if not self.samples:
            return "busy n/a"
        return f"busy {sum(self.samples) / len(self.samples):.0f}% mean, {max(self.samples)}% max ({len(self.samples)} samples)"


def most_at_once(trials) -> int:
    """The most trials that ran at the same time, from their start and end in the study."""
    events = sorted([(t.datetime_start, 1) for t in trials if t.datetime_start and t.datetime_complete]
                    + [(t.datetime_complete, -1) for t in trials if t.datetime_start and t.datetime_complete], key=lambda e: (e[0], e[1]))
    running = most = 0
    for _, change in events:
        running += change
        most = max(most, running)
    return most


def states(trials) -> str:
    names = [t.state.name for t in trials]
    return ", ".join(f"{names.count(name)} {name}" for name in sorted(set(names)))


def check_cuda(check: Check) -> bool:
    import torch

    if check.dry_run:
        check.skip("cuda")
        return False
    if not torch.cuda.is_available():
        check.add("cuda", "FAIL", "torch sees no CUDA device (a CPU build of torch, or no driver)")
        return False
    props = torch.cuda.get_device_properties(0)
    check.add("cuda", "ok", f"{torch.cuda.device_count()} device(s); {props.name}, {props.total_memory / 2**30:.0f} GiB, "
                            f"bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}, torch {torch.__version__}")
    return True


def check_sharing(check: Check) -> None:
    started = time.perf_counter()
    n = check.sizes.share_trials
    config = check.sweep("share", trials=n, concurrent=n, gpu=1 / n)
    with BusySampler() as busy:
        _, trials, _ = run(config)
    at_once = most_at_once(trials)
    complete = all(t.state.name == "COMPLETE" for t in trials) and len(trials) == n
    where = "on CPU, 1 core each" if check.dry_run else f"gpu {1 / n:g} each"
    check.add(f"share {1 / n:g}" if not check.dry_run else "share (CPU)", "ok" if complete and at_once == n else "FAIL",
              f"{states(trials)}; {at_once} of {n} at once ({where}); {busy.summary()}", started)


def check_quality(check: Check, step: str, baseline_f1: float | None, trial_settings: dict | None = None, fixed: dict | None = None) -> None:
    """One trial: COMPLETE, its training loss finite, its F1 above the majority baseline."""
    started = time.perf_counter()
    config = check.sweep(step.split()[0], trial=trial_settings, fixed=fixed)
    result, trials, runs = run(config)
    trial = trials[-1]
    loss = runs[-1].metrics.get("train_loss", math.nan) if runs else math.nan
    f1 = trial.value if trial.value is not None else math.nan
    judged = baseline_f1 is not None and not check.dry_run
    ok = trial.state.name == "COMPLETE" and math.isfinite(loss) and (f1 > baseline_f1 if judged else True)
    versus = f" vs majority {baseline_f1:.3f}" if baseline_f1 is not None else ""
    check.add(step, "ok" if ok else "FAIL", f"{trial.state.name}; train_loss {loss:.3f}; val F1 {f1:.3f}{versus}{'' if judged else ' (not judged)'}", started)


def check_checkpointing(check: Check) -> None:
    started = time.perf_counter()
    peaks, outcomes = {}, []
    for enabled in (False, True):
        peak_file = check.workdir / f"peak-{enabled}.txt"
        config = check.sweep(f"checkpointing-{'on' if enabled else 'off'}", trial={"gradient_checkpointing": enabled}, fixed={"batch_size": 64})
        _, trials, _ = run(config, measured_trial(peak_file))
        outcomes.append(trials[-1].state.name)
        peaks[enabled] = int(peak_file.read_text()) / 2**20 if peak_file.exists() else None
    ok = outcomes == ["COMPLETE", "COMPLETE"] and (check.dry_run or (peaks[True] is not None and peaks[False] is not None and peaks[True] < peaks[False]))
    memory = ("peak n/a on CPU" if peaks[False] is None else f"peak {peaks[False]:.0f} MiB off, {peaks[True]:.0f} MiB on "
              f"({peaks[True] / peaks[False]:.0%})")
    check.add("checkpointing off/on", "ok" if ok else "FAIL", f"{' / '.join(outcomes)}; {memory}; batch 64", started)


def check_oom_retry(check: Check) -> None:
    from orchestrator.tracking import mlflow_tags

    if check.dry_run:
        check.skip("oom retry")
        return
    started = time.perf_counter()
    config = check.sweep("oom-retry", fixed={"batch_size": OOM_BATCH}, trial={"max_epochs": 1})
    _, trials, runs = run(config, measured_trial(check.workdir / "peak-oom.txt", memory_cap_gib=OOM_CAP_GIB))
    micro = runs[-1].tags.get(mlflow_tags.MICRO_BATCH_SIZE) if runs else None
    ok = trials[-1].state.name == "COMPLETE" and micro is not None and int(micro) < OOM_BATCH
    check.add("oom retry", "ok" if ok else "FAIL",
              f"{trials[-1].state.name}; batch {OOM_BATCH} in passes of {micro or 'the whole batch (no out-of-memory: raise OOM_BATCH)'} "
              f"under a {OOM_CAP_GIB} GiB cap", started)


def record_curves(check: Check, seconds_left: float, out: Path) -> None:
    """bench/record_curves.py with the time left; it writes a curve as each finishes, so stopping it loses at most the running ones."""
    started = time.perf_counter()
    if check.dry_run:
        seconds_left = max(seconds_left, 300.0)  # tiny: it finishes; the budget is the GPU run's
    if seconds_left < 30:
        check.add("curves", "skipped", f"{seconds_left:.0f} s left: too little")
        return
    argv = [sys.executable, str(ROOT / "bench" / "record_curves.py"), "--out", str(out)]
    if check.dry_run:
        argv += ["--configs", "1", "--seeds", "0", "--workers", "1", "--train-size", "32", "--val-size", "32", "--max-epochs", "1"]
    else:
        argv += ["--configs", "64", "--seeds", "0", "1", "--workers", "4", "--train-size", "4000", "--gpu"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds_left)
        last = (done.stdout.strip().splitlines() or ["no output"])[-1]
        status = "ok" if done.returncode == 0 else "FAIL"
        detail = last if done.returncode == 0 else f"exit {done.returncode}: {done.stderr.strip()[-300:]}"
    except subprocess.TimeoutExpired as stopped:
        lines = (stopped.stdout or b"").decode().strip().splitlines()
        status, detail = "ok", f"stopped at the time limit; {lines[-1] if lines else 'no curve finished'}"
    rows = max(0, sum(1 for _ in out.open()) - 1) if out.exists() else 0
    check.add("curves", status, f"{detail}; {out.name} holds {rows} rows", started)


def table(check: Check, seconds: float) -> Table:
    title = (f"bench/gpu_check.py{' --dry-run (CPU, tiny sizes)' if check.dry_run else ''}: {seconds:.0f} s; "
             f"{check.sizes.train} train / {check.sizes.val} val rows, max_length {check.sizes.max_length}, {check.sizes.epochs} epoch(s)")
    result = Table(title=title, title_justify="left")
    for column in ("step", "status", "seconds", "detail"):
        result.add_column(column, justify="right" if column == "seconds" else "left")
    for row in check.rows:
        status = {"ok": "[green]ok[/green]", "FAIL": "[red]FAIL[/red]"}.get(row.status, row.status)
        result.add_row(row.step, status, f"{row.seconds:.0f}" if row.seconds else "", row.detail)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="the same steps on CPU at tiny sizes; CUDA-only steps skipped")
    parser.add_argument("--minutes", type=float, default=8.0, help="the whole check's budget; the curves get what is left")
    parser.add_argument("--curves-out", type=Path, default=None, help=f"the curve table (default {CURVES_OUT.relative_to(ROOT)}; a temporary file with --dry-run)")
    args = parser.parse_args()
    started = time.perf_counter()
    budget_s = args.minutes * 60

    import optuna
    import ray
    from transformers.utils import logging as transformers_logging

    from orchestrator.data.prepare import prepare

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    transformers_logging.set_verbosity_error()
    workdir = Path(tempfile.mkdtemp(prefix="hpo-gpu-check-"))
    check = Check(args.dry_run, DRY_SIZES if args.dry_run else GPU_SIZES, workdir)
    console = Console(width=200)
    on_gpu = check_cuda(check)
    if not on_gpu and not args.dry_run:
        console.print(table(check, time.perf_counter() - started))
        raise SystemExit(1)
    ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR")  # once: every step's sweep joins it
    try:
        baseline_f1 = prepare(check.sweep("baseline")).baseline.get("val_f1_macro")
        check_sharing(check)
        for precision in ("bf16", "fp16"):
            if on_gpu:
                check_quality(check, precision, baseline_f1, trial_settings={"precision": precision})
            else:
                check.skip(precision)
        check_checkpointing(check)
        check_quality(check, "lora" if on_gpu else "lora (CPU)", baseline_f1, fixed=LORA)
        check_oom_retry(check)
    except Exception as error:  # the table still shows what ran; the error is its last row
        check.add("(stopped)", "FAIL", f"{type(error).__name__}: {error}"[:300])
    finally:
        ray.shutdown()
    out = args.curves_out or (workdir / "curves.csv" if args.dry_run else CURVES_OUT)
    record_curves(check, budget_s - (time.perf_counter() - started) - 15, out)
    console.print(table(check, time.perf_counter() - started))
    shutil.rmtree(workdir, ignore_errors=True)
    raise SystemExit(1 if any(row.status == "FAIL" for row in check.rows) else 0)


if __name__ == "__main__":
    main()
