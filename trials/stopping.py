"""Early stopping on the objective: stop after ``patience`` epochs without improvement."""

from __future__ import annotations

import math
from dataclasses import dataclass

from trials.objective import Mode, is_better


@dataclass
class EarlyStopping:
    mode: Mode
    patience: int | None  # None never stops
    best: float = math.nan
    stale_epochs: int = 0

    def update(self, value: float) -> bool:
        """Record one epoch's value; return True when training should stop."""
        improved = is_better(value, None if math.isnan(self.best) else self.best, self.mode)
        if improved:
            self.best, self.stale_epochs = value, 0
        else:
            self.stale_epochs += 1
        return self.patience is not None and self.stale_epochs >= self.patience
