"""A training function of your own, searched by hpo (the sweep file's ``trial.function``).

It "trains" a known function so the example runs in seconds: the score after the last epoch is
-(x - 0.3)^2 - (y + 1)^2, best (0) at x = 0.3, y = -1, and each epoch closes the gap a little,
so ASHA can stop poor trials after their first epoch. A real function loads its model and data,
trains, and reports the same way. It saves its state every epoch, so a trial whose worker dies
continues where it stopped.

    hpo run examples/byo_function/sweep.yaml
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from trials import report


def main(config: dict) -> None:
    x, y, epochs = config["x"], config["y"], config["epochs"]
    first = 1
    with report.restored_checkpoint() as folder:  # None unless Ray restarted this trial
        if folder is not None:
            first = json.loads((folder / "state.json").read_text())["epoch"] + 1
    for epoch in range(first, epochs + 1):
        distance = (x - 0.3) ** 2 + (y + 1) ** 2
        score = -distance - (epochs - epoch) / epochs
        with tempfile.TemporaryDirectory() as folder:
            Path(folder, "state.json").write_text(json.dumps({"epoch": epoch}))
            report.epoch({"score": score, "distance": distance}, checkpoint_dir=folder)


if __name__ == "__main__":
    main({"x": 0.0, "y": 0.0, "epochs": 3})  # outside a sweep, report.epoch does nothing
