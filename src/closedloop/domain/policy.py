"""When does drift become an alert? The verdict policy of a monitor. Pure: no I/O, no clock.

A monitor runs one drift check per traffic window. A single drifted window is often noise (a
burst of unusual requests, a batch job), so :func:`decide` turns the sequence of per-window
verdicts into alerts with three rules, parameterised by :class:`MonitorPolicy`:

``min_rows`` (default 200)
    A window with fewer rows is ``"insufficient_data"``: its verdict is not trusted, so it
    neither breaks nor extends a streak of drifted windows (it is skipped).
``persistence`` (default 2)
    An alert fires when the last ``persistence`` *sufficient* windows are all drifted. The
    length of the current streak is reported as ``consecutive``. A sufficient window without
    drift ends the streak (``"ok"``, ``consecutive == 0``).
``cooldown`` (default 1 hour)
    After an alert, no new alert fires until ``cooldown`` has passed since it
    (``"cooling_down"``). The streak must persist through the cooldown to re-alert: a clean
    window during the cooldown resets it, and a new one of ``persistence`` windows is needed.

The current time is an argument (``now``), never read here, so tests drive the policy with a
fake clock and a service passes its injected one. Previous alerts are known from the history:
a :class:`CheckOutcome` whose window raised an alert carries ``alerted_at``.

States, in the order they are decided:

=====================  ===============================================================
``insufficient_data``  ``new.n_rows < min_rows``; ``consecutive`` is the unchanged streak
``ok``                 the window is not drifted; ``consecutive`` is 0
``drifting``           drifted, but the streak is shorter than ``persistence``
``cooling_down``       the streak is long enough, but the last alert is younger than
                       ``cooldown``
``alerted``            the streak is long enough and no alert within ``cooldown``:
                       ``alert`` is true
=====================  ===============================================================
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from closedloop.errors import InvalidInputError

PolicyState = Literal["insufficient_data", "ok", "drifting", "alerted", "cooling_down"]
STATES: tuple[PolicyState, ...] = (
    "insufficient_data",
    "ok",
    "drifting",
    "alerted",
    "cooling_down",
)

DEFAULT_MIN_ROWS = 200
DEFAULT_PERSISTENCE = 2
DEFAULT_COOLDOWN = timedelta(hours=1)


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise InvalidInputError(
            f"The {name!r} parameter must be an int >= {low}. Got {value!r} instead."
        )
    return int(value)


def _check_aware(name: str, value: object) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidInputError(
            f"The {name!r} parameter must be a timezone-aware datetime. Got {value!r} instead."
        )
    return value


@dataclass(frozen=True)
class MonitorPolicy:
    """How per-window drift verdicts become alerts (see the module docstring)."""

    min_rows: int = DEFAULT_MIN_ROWS
    persistence: int = DEFAULT_PERSISTENCE
    cooldown: timedelta = DEFAULT_COOLDOWN

    def __post_init__(self) -> None:
        _check_int("min_rows", self.min_rows, 1)
        _check_int("persistence", self.persistence, 1)
        if not isinstance(self.cooldown, timedelta) or self.cooldown < timedelta(0):
            raise InvalidInputError(
                f"The 'cooldown' parameter must be a timedelta >= 0. Got {self.cooldown!r} instead."
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "min_rows": self.min_rows,
            "persistence": self.persistence,
            "cooldown_seconds": self.cooldown.total_seconds(),
        }


@dataclass(frozen=True)
class CheckOutcome:
    """The verdict of one window's drift check, as the policy sees it.

    ``ts`` is when the window was checked; ``alerted_at`` is set (timezone-aware) when an
    alert fired on this window. ``check_id`` and ``drifted_columns`` are carried for the
    caller (alert payloads) and do not affect the decision.
    """

    ts: datetime
    drifted: bool
    n_rows: int
    check_id: int | None = None
    drifted_columns: tuple[str, ...] = field(default=())
    alerted_at: datetime | None = None

    def __post_init__(self) -> None:
        _check_aware("ts", self.ts)
        _check_int("n_rows", self.n_rows, 0)
        if self.alerted_at is not None:
            _check_aware("alerted_at", self.alerted_at)


@dataclass(frozen=True)
class PolicyDecision:
    """What :func:`decide` concluded about the newest window."""

    alert: bool
    state: PolicyState
    consecutive: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "alert": self.alert,
            "state": self.state,
            "consecutive": self.consecutive,
            "reason": self.reason,
        }


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def format_duration(delta: timedelta) -> str:
    """``1h 5m``, ``30m``, ``45s``, ``0s``: a short human duration (whole seconds)."""
    seconds = max(0, int(delta.total_seconds()))
    days, seconds = divmod(seconds, 86_400)
    hours, seconds = divmod(seconds, 3_600)
    minutes, seconds = divmod(seconds, 60)
    parts = [f"{v}{unit}" for v, unit in ((days, "d"), (hours, "h"), (minutes, "m")) if v]
    if seconds or not parts:
        parts.append(f"{seconds}s")
    return " ".join(parts)


def streak(policy: MonitorPolicy, outcomes: Sequence[CheckOutcome]) -> int:
    """How many of the latest sufficient windows (oldest first in ``outcomes``) are drifted."""
    count = 0
    for outcome in reversed(outcomes):
        if outcome.n_rows < policy.min_rows:
            continue
        if not outcome.drifted:
            break
        count += 1
    return count


def last_alert(outcomes: Sequence[CheckOutcome]) -> datetime | None:
    """When the most recent alert among ``outcomes`` fired (None if none did)."""
    times = [o.alerted_at for o in outcomes if o.alerted_at is not None]
    return max(times) if times else None


def decide(
    policy: MonitorPolicy,
    history: Sequence[CheckOutcome],
    new: CheckOutcome,
    now: datetime,
) -> PolicyDecision:
    """Decide whether the newest window ``new`` raises an alert.

    ``history`` holds the earlier windows of the same model version, oldest first (it must
    reach back at least to the last alert within ``cooldown`` for the cooldown to hold).
    ``now`` is the current time (timezone-aware), compared with the last alert's
    ``alerted_at``.
    """
    if not isinstance(policy, MonitorPolicy):
        raise InvalidInputError(
            f"The 'policy' parameter must be a MonitorPolicy. Got {type(policy).__name__} instead."
        )
    _check_aware("now", now)
    before = streak(policy, history)
    if new.n_rows < policy.min_rows:
        return PolicyDecision(
            alert=False,
            state="insufficient_data",
            consecutive=before,
            reason=(
                f"Only {_plural(new.n_rows, 'row')} in the window; a verdict needs at least "
                f"{policy.min_rows} (min_rows). The window is skipped: the streak stays at "
                f"{_plural(before, 'drifted window')}."
            ),
        )
    if not new.drifted:
        ended = f"; this ends a streak of {_plural(before, 'drifted window')}" if before else ""
        return PolicyDecision(
            alert=False, state="ok", consecutive=0, reason=f"No drift in this window{ended}."
        )
    consecutive = before + 1
    windows = _plural(consecutive, "consecutive drifted window")
    if consecutive < policy.persistence:
        return PolicyDecision(
            alert=False,
            state="drifting",
            consecutive=consecutive,
            reason=f"{windows}; an alert needs {policy.persistence} (persistence).",
        )
    previous = last_alert(history)
    if previous is not None and now - previous < policy.cooldown:
        remaining = policy.cooldown - (now - previous)
        return PolicyDecision(
            alert=False,
            state="cooling_down",
            consecutive=consecutive,
            reason=(
                f"{windows}, but the last alert was {format_duration(now - previous)} ago; "
                f"no new alert for another {format_duration(remaining)} "
                f"(cooldown {format_duration(policy.cooldown)})."
            ),
        )
    return PolicyDecision(
        alert=True,
        state="alerted",
        consecutive=consecutive,
        reason=f"{windows} (persistence {policy.persistence}).",
    )
