"""Monitors: run a drift check on the latest traffic window, then decide whether to alert.

:func:`run_monitor` is what a scheduler (cron, a loop) calls once per window:

1. :func:`closedloop.services.monitoring.monitor` checks the latest prediction-log window of the
   model's production version against its reference sample and records a check row with a
   ``check.recorded`` event (it refuses windows below ``monitor.min_rows``: a ConflictError).
   When nothing was logged for the version since its last check, there is no new window: a
   ConflictError says so and nothing is recorded (one window, one verdict);
2. the version's earlier checks are read from the ``checks`` table and the alerts still in
   their cooldown from the ``monitor.alert`` events;
3. :func:`closedloop.domain.policy.decide` applies the :class:`MonitorPolicy` (persistence,
   cooldown, the policy's own ``min_rows``) with the injected clock ``now``;
4. when it alerts, a ``monitor.alert`` event is recorded with payload ``check_id``,
   ``drifted_columns``, ``reasons`` (:func:`closedloop.domain.checks.verdict.verdict_reasons`:
   why the window drifted), ``consecutive``, ``reason`` (the policy's) and the ``policy``; its
   ``ts`` is ``now()``.

Steps 2-4 run in one write transaction (``BEGIN IMMEDIATE`` on SQLite, the model row locked on
PostgreSQL), so two monitors of one model racing do not both alert. The streak and the cooldown
are per model version: a new production version starts afresh.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select

from closedloop.domain.policy import CheckOutcome, MonitorPolicy, PolicyDecision, decide
from closedloop.errors import ConflictError, InvalidInputError
from closedloop.services import events, registry
from closedloop.services.events import as_utc, utcnow
from closedloop.services.monitoring import (
    CheckResult,
    DriftOptions,
    check_summary,
    count_checks,
    monitor,
)
from closedloop.services.workspace import Workspace, default_actor
from closedloop.storage.metadata.tables import checks, models
from closedloop.storage.metadata.tables import events as events_table

ALERT_EVENT = "monitor.alert"
HISTORY_WINDOWS = 100
"""Earlier checks read for the streak (at least ``10 * persistence``); more are read when an
alert still cooling down is older than them."""


@dataclass(frozen=True)
class MonitorResult:
    """One monitor run: the recorded check, the policy's decision and the alert (if any)."""

    check: CheckResult
    decision: PolicyDecision
    policy: MonitorPolicy
    ts: datetime
    """When the decision was made (the injected clock)."""
    alert_event_id: int | None = None

    @property
    def alerted(self) -> bool:
        return self.decision.alert

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check.to_dict(),
            "decision": self.decision.to_dict(),
            "policy": self.policy.to_dict(),
            "ts": self.ts.isoformat(),
            "alert_event_id": self.alert_event_id,
        }


def _outcome(row: Any, alerts: dict[int, datetime], repeated: bool) -> CheckOutcome:
    """A recorded check as the policy sees it. A check of exactly the rows the previous check
    saw (no new traffic in between) counts as no data: the same window must not extend a
    streak twice."""
    return CheckOutcome(
        ts=as_utc(row.ts),
        drifted=bool(row.drifted),
        n_rows=0 if repeated else int(row.n_current),
        check_id=int(row.id),
        alerted_at=alerts.get(int(row.id)),
    )


def _window_end(result: Any) -> str | None:
    window = (result or {}).get("window") if isinstance(result, dict) else None
    end = window.get("end") if isinstance(window, dict) else None
    return end if isinstance(end, str) else None


def _recent_alerts(
    conn: Connection, model: str, version: int, since: datetime
) -> dict[int, datetime]:
    """``check_id -> ts`` of the version's ``monitor.alert`` events at or after ``since``."""
    rows = conn.execute(
        select(events_table.c.ts, events_table.c.payload).where(
            events_table.c.kind == ALERT_EVENT,
            events_table.c.model == model,
            events_table.c.version == version,
            events_table.c.ts >= since,
        )
    )
    found: dict[int, datetime] = {}
    for row in rows:
        check_id = (row.payload or {}).get("check_id")
        if isinstance(check_id, int):
            ts = as_utc(row.ts)
            found[check_id] = max(ts, found.get(check_id, ts))
    return found


def _history(
    conn: Connection, policy: MonitorPolicy, check: CheckResult, alerts: dict[int, datetime]
) -> list[CheckOutcome]:
    """The version's checks recorded before ``check``, oldest first."""
    columns = (checks.c.id, checks.c.ts, checks.c.drifted, checks.c.n_current, checks.c.result)
    same = (checks.c.model == check.model, checks.c.version == check.version)
    recent = list(
        conn.execute(
            select(*columns)
            .where(*same, checks.c.id < check.id)
            .order_by(checks.c.id.desc())
            .limit(max(HISTORY_WINDOWS, 10 * policy.persistence))
        )
    )
    older_alerts = [i for i in alerts if i < check.id and (not recent or i < recent[-1].id)]
    if older_alerts:  # reach back to the oldest alert that is still cooling down
        recent = list(
            conn.execute(
                select(*columns)
                .where(*same, checks.c.id < check.id, checks.c.id >= min(older_alerts))
                .order_by(checks.c.id.desc())
            )
        )
    outcomes = []
    previous_end: str | None = None
    for row in reversed(recent):
        end = _window_end(row.result)
        outcomes.append(_outcome(row, alerts, end is not None and end == previous_end))
        previous_end = end
    return outcomes


def _last_window_end(conn: Connection, check: CheckResult) -> str | None:
    row = conn.execute(
        select(checks.c.result)
        .where(
            checks.c.model == check.model, checks.c.version == check.version, checks.c.id < check.id
        )
        .order_by(checks.c.id.desc())
        .limit(1)
    ).first()
    return None if row is None else _window_end(row.result)


def last_check_without_new_traffic(
    ws: Workspace, model: str, version: int
) -> dict[str, Any] | None:
    """The version's last check when nothing was logged for ``version`` since its window ended
    (checking again would test the same rows); None when there is new traffic or no check."""
    with ws.metadata.read() as conn:
        row = conn.execute(
            select(checks)
            .where(checks.c.model == model, checks.c.version == version)
            .order_by(checks.c.id.desc())
            .limit(1)
        ).first()
        number = 0 if row is None else count_checks(conn, model, row.id)
    end = None if row is None else _window_end(row.result)
    if row is None or end is None:
        return None
    log = ws.prediction_log()
    try:
        latest = log.read(model, last_rows=1, version=version)
    finally:
        log.close()
    if not len(latest) or latest["_ts"].max().isoformat() != end:
        return None
    return {**check_summary(row, number), "window": dict(row.result.get("window") or {})}


def run_monitor(
    ws: Workspace,
    model: str,
    *,
    now: Callable[[], datetime] = utcnow,
    version: int | None = None,
    window_rows: int | None = None,
    policy: MonitorPolicy | None = None,
    options: DriftOptions | None = None,
    actor: str | None = None,
) -> MonitorResult:
    """Check the latest traffic window of ``model`` and alert when the policy says so.

    ``now`` is the clock (called once, after the check) used for the cooldown and as the
    ``monitor.alert`` event's time. ``policy`` defaults to the ``[monitor]`` settings
    (``min_rows``, ``persistence``, ``cooldown_seconds``). ``version``, ``window_rows``,
    ``options`` and ``actor`` are passed to :func:`closedloop.services.monitoring.monitor`,
    whose errors propagate (no production version, fewer than ``monitor.min_rows`` logged
    rows: ConflictError). No traffic logged for the version since its last check is a
    ConflictError too, raised before anything is computed or recorded.
    """
    cfg = ws.settings.monitor
    policy = policy or MonitorPolicy(
        min_rows=cfg.min_rows,
        persistence=cfg.persistence,
        cooldown=timedelta(seconds=cfg.cooldown_seconds),
    )
    if not isinstance(policy, MonitorPolicy):
        raise InvalidInputError(
            f"The 'policy' parameter must be a MonitorPolicy. Got {type(policy).__name__} instead."
        )
    number = version or registry.resolve_alias(ws, model)
    last = None if number is None else last_check_without_new_traffic(ws, model, number)
    if last is not None:
        raise ConflictError(
            f"No new traffic for {model!r} version {number} since check {last['number']} "
            f"(its window ended {last['window']['end']}): there is no new window to check.",
            hint="Run the monitor again once the model has answered more requests.",
            details={"check_id": last["check_id"], "version": number},
        )
    check = monitor(
        ws, model, version=version, window_rows=window_rows, options=options, actor=actor
    )
    decided_at = as_utc(now()).astimezone(UTC)  # SQLite keeps wall-clock time: store UTC
    drifted_columns = tuple(check.report.drifted_columns)
    new = CheckOutcome(
        ts=check.ts,
        drifted=check.report.drifted,
        n_rows=check.report.n_current,
        check_id=check.id,
        drifted_columns=drifted_columns,
    )
    event_id: int | None = None
    with ws.metadata.write() as conn:
        if conn.dialect.name == "postgresql":  # serialise the monitors of one model
            conn.execute(select(models.c.id).where(models.c.name == model).with_for_update())
        alerts = _recent_alerts(conn, model, check.version, decided_at - policy.cooldown)
        history = _history(conn, policy, check, alerts)
        end = check.window.get("end")
        if end is not None and end == _last_window_end(conn, check):
            new = replace(new, n_rows=0)  # no new traffic since the last check
        decision = decide(policy, history, new, decided_at)
        if decision.alert:
            event_id = events.record(
                conn,
                ALERT_EVENT,
                actor=actor or default_actor(),
                model=model,
                version=check.version,
                payload={
                    "check_id": check.id,
                    "drifted_columns": list(drifted_columns),
                    "reasons": [r.to_dict() for r in check.reasons()],
                    "consecutive": decision.consecutive,
                    "reason": decision.reason,
                    "policy": policy.to_dict(),
                },
                reason=decision.reason,
                ts=decided_at,
            )
    return MonitorResult(
        check=check, decision=decision, policy=policy, ts=decided_at, alert_event_id=event_id
    )


def check_history(ws: Workspace, model: str, *, limit: int = 20) -> list[dict[str, Any]]:
    """The model's most recent checks, newest first: the keys of
    :func:`closedloop.services.monitoring.list_checks` plus ``result`` (the stored
    :meth:`DriftReport.to_dict`) and ``alerted`` (whether a ``monitor.alert`` names the check).
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidInputError(
            f"The 'limit' parameter must be an int >= 1. Got {limit!r} instead."
        )
    with ws.metadata.read() as conn:
        rows = list(
            conn.execute(
                select(checks)
                .where(checks.c.model == model)
                .order_by(checks.c.id.desc())
                .limit(limit)
            )
        )
        alerted: set[int] = set()
        if rows:  # alerts are rare (cooldown), so all of the model's are read
            payloads = conn.execute(
                select(events_table.c.payload).where(
                    events_table.c.kind == ALERT_EVENT, events_table.c.model == model
                )
            )
            alerted = {p.payload.get("check_id") for p in payloads if p.payload}
        total = count_checks(conn, model)
    return [
        {
            **check_summary(r, total - i),
            "result": dict(r.result or {}),
            "alerted": r.id in alerted,
        }
        for i, r in enumerate(rows)
    ]


def list_alerts(ws: Workspace, model: str, *, limit: int | None = None) -> list[events.Event]:
    """The model's ``monitor.alert`` events, oldest first (the last ``limit``)."""
    return events.list_events(ws, model=model, kinds=(ALERT_EVENT,), limit=limit)
