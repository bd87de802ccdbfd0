"""Wall-clock budgets: `--time-budget 10m` parsed, and the deadline a search stops at."""

from __future__ import annotations

import re
import time

from kerasflow.runtime.errors import UserError

_PART = re.compile(r"(\d+(?:\.\d+)?)([hms]?)")
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "": 1.0}


def parse_time_budget(text: str | int | float) -> float:
    """Seconds in a budget such as `90`, `90s`, `10m`, `1.5h` or `1h30m`; 0 for none ("").

    Raises:
        UserError: when the text is not such a duration.
    """
    if isinstance(text, bool):
        raise UserError(f"time budget {text!r} is not a duration like 90s, 10m or 1h30m")
    if isinstance(text, (int, float)):
        if text < 0:
            raise UserError(f"time budget {text!r} must not be negative")
        return float(text)
    compact = str(text).strip().lower().replace(" ", "")
    if compact in ("", "0", "none"):
        return 0.0
    pos, total, units = 0, 0.0, []
    while pos < len(compact):
        match = _PART.match(compact, pos)
        if not match:
            raise UserError(f"time budget '{text}' is not a duration like 90s, 10m or 1h30m")
        units.append(match.group(2))
        total += float(match.group(1)) * _UNIT[match.group(2)]
        pos = match.end()
    if len(units) > 1 and ("" in units or len(set(units)) != len(units)):
        raise UserError(f"time budget '{text}' is not a duration like 90s, 10m or 1h30m")
    return total


def deadline_after(seconds: float, start: float | None = None) -> float:
    """The epoch time a budget of `seconds` ends at (0 for no budget)."""
    if seconds <= 0:
        return 0.0
    return (time.time() if start is None else start) + seconds


def spent(deadline: float) -> bool:
    """True once a deadline (epoch seconds; 0 means none) has passed."""
    return bool(deadline) and time.time() >= deadline
