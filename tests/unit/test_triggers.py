"""Triggers: cron schedules (parsing, next fire time, what is due) and performance drops."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from closedloop.domain.triggers import CronSchedule, PerformanceCheck, schedule_due
from closedloop.errors import ConfigError

FRIDAY = datetime(2026, 11, 27, 22, 31, tzinfo=UTC)  # a Friday


def at(day: int, hour: int, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("* * * * *", at(27, 22, 32)),
        ("0 3 * * *", at(28, 3)),
        ("@daily", at(28, 0)),
        ("@hourly", at(27, 23)),
        ("*/15 9-17 * * mon-fri", at(30, 9)),  # the weekend is skipped
        ("30 22 * * *", at(28, 22, 30)),  # 22:30 today has passed
        ("0 0 1 * *", datetime(2026, 12, 1, tzinfo=UTC)),
        ("0 12 * dec sat", datetime(2026, 12, 5, 12, tzinfo=UTC)),
        ("0 0 * * 7", at(29, 0)),  # 7 is Sunday too
        ("0 0 * * 5-7", at(28, 0)),  # Friday to Sunday: Saturday is next
        ("15,45 * * * *", at(27, 22, 45)),
    ],
)
def test_the_next_fire_time_follows_cron_rules(expression: str, expected: datetime) -> None:
    assert CronSchedule.parse(expression).next_after(FRIDAY) == expected


def test_a_restricted_day_of_month_and_day_of_week_match_either_as_in_cron() -> None:
    schedule = CronSchedule.parse("0 0 1 * mon")  # the 1st, or any Monday
    assert schedule.next_after(FRIDAY) == at(30, 0)  # Monday 30th comes before Dec 1st
    assert schedule.next_after(at(30, 0)) == datetime(2026, 12, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("", "empty"),
        ("* * *", "3 fields, 5 are needed"),
        ("61 * * * *", "61 is outside 0-59 in the minute field"),
        ("* 24 * * *", "outside 0-23 in the hour field"),
        ("x * * * *", "'x' is not a number in the minute field"),
        ("5-1 * * * *", "runs backwards"),
        ("*/0 * * * *", "the step '0'"),
        ("1,,2 * * * *", "empty list item"),
    ],
)
def test_a_bad_expression_names_the_field_and_the_problem(expression: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as caught:
        CronSchedule.parse(expression)
    assert caught.value.hint and "minute hour day-of-month month day-of-week" in caught.value.hint


def test_a_date_that_never_exists_is_an_error_not_a_hang() -> None:
    with pytest.raises(ConfigError, match="never fires"):
        CronSchedule.parse("0 0 31 2 *").next_after(FRIDAY)


def test_fire_times_need_timezone_aware_datetimes() -> None:
    with pytest.raises(ConfigError, match="timezone-aware"):
        CronSchedule.parse("@daily").next_after(datetime(2026, 1, 1))


def test_nothing_is_due_before_the_first_fire_time() -> None:
    hourly = CronSchedule.parse("@hourly")
    since = at(27, 20, 5)
    assert schedule_due(hourly, last_run=None, since=since, now=at(27, 20, 59)) is None
    assert schedule_due(hourly, last_run=None, since=since, now=at(27, 21, 0)) == at(27, 21)


def test_missed_fire_times_collapse_into_one_run_at_the_latest() -> None:
    hourly = CronSchedule.parse("@hourly")
    due = schedule_due(hourly, last_run=at(27, 17), since=at(27, 12), now=at(27, 20, 30))
    assert due == at(27, 20)  # 18:00, 19:00 and 20:00 were missed: one run, for 20:00
    assert schedule_due(hourly, last_run=due, since=at(27, 12), now=at(27, 20, 59)) is None


def test_a_run_is_due_again_at_the_next_fire_time_after_the_last() -> None:
    daily = CronSchedule.parse("0 3 * * *")
    last = at(27, 3)
    assert schedule_due(daily, last_run=last, since=at(1, 0), now=at(28, 2, 59)) is None
    assert schedule_due(daily, last_run=last, since=at(1, 0), now=at(28, 3)) == at(28, 3)


def test_a_performance_drop_is_measured_in_the_metrics_good_direction() -> None:
    auc = PerformanceCheck("roc_auc", 0.80, 0.74, 0.05, higher_is_better=True, n_rows=500)
    assert auc.drop == pytest.approx(0.06) and auc.dropped
    small = PerformanceCheck("roc_auc", 0.80, 0.77, 0.05, higher_is_better=True, n_rows=500)
    assert not small.dropped
    rmse = PerformanceCheck("rmse", 1.0, 1.2, 0.1, higher_is_better=False, n_rows=500)
    assert rmse.drop == pytest.approx(0.2) and rmse.dropped
    better = PerformanceCheck("rmse", 1.0, 0.7, 0.1, higher_is_better=False, n_rows=500)
    assert not better.dropped and better.drop < 0
    assert rmse.to_dict()["dropped"] is True


def test_an_undefined_live_metric_never_counts_as_a_drop() -> None:
    check = PerformanceCheck("roc_auc", 0.8, float("nan"), 0.01, higher_is_better=True, n_rows=3)
    assert not check.dropped


def test_schedules_are_in_utc_whatever_the_callers_timezone() -> None:
    from datetime import timezone

    paris = timezone(timedelta(hours=1))
    local = datetime(2026, 11, 28, 3, 30, tzinfo=paris)  # 02:30 UTC
    assert CronSchedule.parse("0 3 * * *").next_after(local) == at(28, 3)
