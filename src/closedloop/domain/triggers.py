"""What starts a retraining: a schedule, a drift alert, a performance drop, or a person. Pure.

:class:`CronSchedule` parses a standard 5-field cron expression (minute, hour, day of month,
month, day of week; UTC), with ``*``, lists ``a,b``, ranges ``a-b``, steps ``*/n`` and ``a-b/n``,
month and weekday names (``jan``, ``mon``), and the ``@hourly``/``@daily``/``@weekly``/
``@monthly``/``@yearly`` shorthands. As in cron, when both day of month and day of week are
restricted, a day matches if *either* does.

:func:`schedule_due` says whether a scheduled run is due: the first fire time after the last run
(or after ``since`` when there was none) is at or before ``now``. Missed fire times collapse into
one run: an agent that was down for three scheduled hours retrains once, not three times.

:func:`performance_dropped` compares a metric on live traffic with the version's held-out score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from closedloop.errors import ConfigError

TriggerKind = Literal["schedule", "drift", "performance", "estimated_performance", "manual"]
TRIGGER_KINDS: tuple[TriggerKind, ...] = (
    "schedule",
    "drift",
    "performance",
    "estimated_performance",
    "manual",
)

_FIELDS = (  # name, low, high
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 6),
)
_MONTHS = {
    name: i + 1
    for i, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
    )
}
_DAYS = {name: i for i, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
_SHORTHANDS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_HINT = (
    "Use 5 fields: minute hour day-of-month month day-of-week (UTC), "
    'e.g. "0 3 * * *" for 03:00 every day, or @hourly/@daily/@weekly.'
)


def _error(expression: str, problem: str) -> ConfigError:
    return ConfigError(f"Invalid cron expression {expression!r}: {problem}.", hint=_HINT)


def _value(token: str, index: int, expression: str) -> int:
    name, low, high = _FIELDS[index]
    names = _MONTHS if index == 3 else _DAYS if index == 4 else {}
    lowered = token.lower()
    if lowered in names:
        return names[lowered]
    if not token.isdigit():
        raise _error(expression, f"{token!r} is not a number in the {name} field")
    number = int(token)
    if index == 4 and number == 7:  # Sunday may be written 7
        return 0
    if not low <= number <= high:
        raise _error(expression, f"{number} is outside {low}-{high} in the {name} field")
    return number


def _parse_field(text: str, index: int, expression: str) -> frozenset[int]:
    name, low, high = _FIELDS[index]
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise _error(expression, f"an empty list item in the {name} field")
        body, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise _error(expression, f"the step {step_text!r} in the {name} field")
            step = int(step_text)
        if body == "*":
            start, stop = low, high
        elif "-" in body:
            first, _, last = body.partition("-")
            start, stop = _value(first, index, expression), _value(last, index, expression)
            if index == 4 and last == "7":  # "5-7" is Friday to Sunday
                stop = 6
                values.add(0)
            if start > stop:
                raise _error(expression, f"the range {body!r} runs backwards in the {name} field")
        else:
            start = _value(body, index, expression)
            stop = high if step_text else start
        values.update(range(start, stop + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class CronSchedule:
    """A parsed cron expression; :meth:`next_after` gives fire times (UTC)."""

    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool
    any_weekday: bool

    @classmethod
    def parse(cls, expression: str) -> CronSchedule:
        if not isinstance(expression, str) or not expression.strip():
            raise _error(str(expression), "it is empty")
        text = _SHORTHANDS.get(expression.strip().lower(), expression.strip())
        parts = text.split()
        if len(parts) != 5:
            raise _error(expression, f"it has {len(parts)} fields, 5 are needed")
        fields = [_parse_field(p, i, expression) for i, p in enumerate(parts)]
        return cls(
            expression=expression.strip(),
            minutes=fields[0],
            hours=fields[1],
            days=fields[2],
            months=fields[3],
            weekdays=fields[4],
            any_day=parts[2] == "*",
            any_weekday=parts[4] == "*",
        )

    def _day_matches(self, moment: datetime) -> bool:
        if moment.month not in self.months:
            return False
        day_ok = moment.day in self.days
        weekday_ok = (moment.isoweekday() % 7) in self.weekdays
        if self.any_day and self.any_weekday:
            return True
        if self.any_day:
            return weekday_ok
        if self.any_weekday:
            return day_ok
        return day_ok or weekday_ok

    def next_after(self, moment: datetime) -> datetime:
        """The first fire time strictly after ``moment`` (a timezone-aware datetime)."""
        if moment.tzinfo is None:
            raise ConfigError("Cron times must be timezone-aware (UTC).")
        current = moment.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        limit = current + timedelta(days=366 * 5)
        while current < limit:
            if not self._day_matches(current):
                current = (current + timedelta(days=1)).replace(hour=0, minute=0)
                continue
            if current.hour not in self.hours:
                current = (current + timedelta(hours=1)).replace(minute=0)
                continue
            if current.minute not in self.minutes:
                current += timedelta(minutes=1)
                continue
            return current
        raise _error(self.expression, "it never fires (no such date)")


def schedule_due(
    schedule: CronSchedule, *, last_run: datetime | None, since: datetime, now: datetime
) -> datetime | None:
    """The fire time that is due now, or ``None``.

    ``last_run`` is when the schedule last fired (``None``: never); ``since`` is when the
    schedule started to count (the agent's first pass), so a new agent does not fire for all of
    history. Several missed fire times give one due time: the latest one at or before ``now``.
    """
    start = max(last_run, since) if last_run is not None else since
    first = schedule.next_after(start)
    if first > now:
        return None
    due = first
    while True:
        following = schedule.next_after(due)
        if following > now:
            return due
        due = following


@dataclass(frozen=True)
class PerformanceCheck:
    """Live metric vs the version's held-out score: did it get worse by more than ``threshold``?

    ``drop`` is how much worse, in the metric's units: ``baseline - current`` for metrics where
    higher is better (accuracy, roc_auc, r2), ``current - baseline`` for errors (rmse, mae,
    log_loss)."""

    metric: str
    baseline: float
    current: float
    threshold: float
    higher_is_better: bool
    n_rows: int

    @property
    def drop(self) -> float:
        delta = self.baseline - self.current
        return delta if self.higher_is_better else -delta

    @property
    def dropped(self) -> bool:
        return math.isfinite(self.current) and self.drop > self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "baseline": self.baseline,
            "current": self.current,
            "drop": self.drop,
            "threshold": self.threshold,
            "dropped": self.dropped,
            "n_rows": self.n_rows,
        }


__all__ = [
    "TRIGGER_KINDS",
    "CronSchedule",
    "PerformanceCheck",
    "TriggerKind",
    "schedule_due",
]
