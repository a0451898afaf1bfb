"""The one reporting surface a trial uses: hand each epoch's metrics (and its checkpoint) to
Ray Tune, and find the checkpoint a restarted trial continues from."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def ray_tune_report(metrics: dict, checkpoint_dir: str | None = None) -> None:
    """Report ``metrics`` to the Ray Tune session this trial runs in; ``checkpoint_dir`` (if
    given) is copied to the run's storage before this returns."""
    from ray import tune

    checkpoint = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
    tune.report(metrics, checkpoint=checkpoint)


@contextmanager
def restored_checkpoint() -> Iterator[Path | None]:
    """The folder of the latest checkpoint of this trial when Ray restarted it after a failure, else None."""
    from ray import tune

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        yield None
        return
    with checkpoint.as_directory() as folder:
        yield Path(folder)
