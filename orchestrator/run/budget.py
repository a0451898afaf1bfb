"""Wall-clock budget of one invocation (``--timeout``).

After the deadline no new trial starts (the searcher says it is finished), and each running
trial is stopped at its next report (recorded PRUNED, reason ``budget``). A trial that does
not report within ``grace_s`` after the deadline is stopped at once.
"""

from __future__ import annotations

import re
import time

from ray.tune import Stopper

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DEFAULT_GRACE_S = 60.0


def parse_duration(text: str) -> float:
    """Seconds in ``"90"``, ``"90s"``, ``"45m"``, ``"6h"``, ``"1d"`` or ``"1h30m"``."""
    cleaned = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", cleaned):
        return float(cleaned)
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhd])", cleaned)
    if not parts or "".join(number + unit for number, unit in parts) != cleaned:
        raise ValueError(f"{text!r} is not a duration; write it like 90s, 45m, 6h or 1h30m")
    return sum(float(number) * _UNITS[unit] for number, unit in parts)


class Deadline(Stopper):
    def __init__(self, seconds: float | None, grace_s: float = DEFAULT_GRACE_S) -> None:
        self.at = time.monotonic() + seconds if seconds is not None else None
        self.grace_s = grace_s

    @property
    def passed(self) -> bool:
        return self.at is not None and time.monotonic() >= self.at

    def __call__(self, trial_id: str, result: dict) -> bool:
        return self.passed

    def stop_all(self) -> bool:
        return self.at is not None and time.monotonic() >= self.at + self.grace_s
