"""The agent: a reconcile loop that runs the loop on its own.

Each pass, while holding the lease (:mod:`closedloop.services.lease`), for the pipeline's model:

1. **Rollbacks** — every ``alias.rollback`` not yet alerted gets a ``rollback_done`` alert (the
   rollback raises it itself; this catches one whose alert could not be raised then).
2. **Rollout** — a running canary is evaluated on its guardrails
   (:func:`closedloop.services.rollout.evaluate`): it advances, is promoted, or is aborted
   (production restored, ``canary_aborted`` alert).
3. **Monitor and triggers** — the drift monitor checks the latest traffic window
   (:func:`closedloop.services.monitors.run_monitor`, with its persistence and cooldown); its
   alert is sent as a ``drift`` alert and, with ``agent.on_drift``, requests a retrain. The
   realised metric on labelled traffic (``agent.performance_drop``) and the label-free estimate
   (``agent.estimated_drop``) are compared with the production version's held-out score. The
   cron ``agent.schedule`` requests a retrain at its fire times. ``closedloop retrain`` requests
   one by hand.
4. **Retraining** — the oldest pending request (none while a canary runs) runs the pipeline on the
   declared data (``agent.retrain_data``): the user's loader, recent labelled traffic, or both.
   The candidate is gated against production (:mod:`closedloop.domain.gate`); one that passes
   starts a canary (``agent.rollout = "canary"``) or is promoted at once (``"promote"``). A
   failure (the user's code raises, no data) is recorded with its traceback and alerted;
   production is not touched.

Every step is recorded in the event log and is idempotent, so an agent that takes over from a
dead one finishes its work without repeating any of it: a request is keyed (``drift:<alert id>``,
``schedule:<fire time>``, ``manual:<uuid>``) and recorded once; a request is finished by exactly
one ``retrain.finished`` event; a version registered for a request carries the request's id in
its lineage, so a retry after a crash finds it instead of training again; rollout transitions
are compare-and-set. Time is injected (``clock``), so every policy is testable with a fake clock.
"""

from __future__ import annotations

import logging
import threading
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from closedloop.domain.triggers import CronSchedule, PerformanceCheck, schedule_due
from closedloop.errors import ClosedloopError, ConfigError, ConflictError, NotFoundError
from closedloop.services import events, registry
from closedloop.services import rollout as rollouts
from closedloop.services.events import as_utc, utcnow
from closedloop.services.lease import LeaseHolder
from closedloop.services.workspace import Workspace

if TYPE_CHECKING:
    import pandas as pd

    from closedloop.domain.guardrails import GuardrailPolicy
    from closedloop.services.alerts import AlertSender

log = logging.getLogger("closedloop.agent")

ACTOR = "agent"
REQUESTED = "retrain.requested"
STARTED = "retrain.started"
FINISHED = "retrain.finished"
RETRAIN_KINDS = (REQUESTED, STARTED, FINISHED)
RetrainData = Literal["loader", "traffic", "traffic+loader"]
RETRAIN_DATA: tuple[str, ...] = ("loader", "traffic", "traffic+loader")
ROLLOUT_MODES: tuple[str, ...] = ("canary", "promote")
MAX_ATTEMPTS = 3
"""A request started this many times without finishing is failed, not started again."""


class LeaseLost(ClosedloopError):
    """Another agent took the lease while this one was working; it stops acting."""

    code = "lease_lost"


# --------------------------------------------------------------------------------------------
# Policy
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentPolicy:
    """The ``[agent]`` settings, validated."""

    model: str
    interval: timedelta
    lease: timedelta
    schedule: CronSchedule | None
    on_drift: bool
    performance_drop: float
    estimated_drop: float
    retrain_data: str
    traffic_rows: int
    min_labelled_rows: int
    rollout: str
    canary_steps: tuple[float, ...]
    step_duration: timedelta

    @classmethod
    def from_workspace(cls, ws: Workspace) -> AgentPolicy:
        """Build from the settings; every bad value is a ConfigError naming the setting."""
        cfg = ws.settings.agent
        model = ws.settings.pipeline.model
        if not model:
            raise ConfigError(
                "The agent needs pipeline.model (the model it looks after).",
                hint="Run `closedloop init` or set [pipeline] model in closedloop.toml.",
            )
        for name in ("interval_seconds", "lease_seconds", "step_seconds"):
            if not getattr(cfg, name) > 0:
                raise ConfigError(
                    f"agent.{name} must be a number > 0. Got {getattr(cfg, name)!r} instead."
                )
        if cfg.lease_seconds < cfg.interval_seconds:
            raise ConfigError(
                f"agent.lease_seconds ({cfg.lease_seconds}) must be at least "
                f"agent.interval_seconds ({cfg.interval_seconds}): the active agent renews its "
                "lease once a pass.",
            )
        for name in ("performance_drop", "estimated_drop"):
            if not getattr(cfg, name) >= 0:
                raise ConfigError(
                    f"agent.{name} must be a number >= 0 (0 turns it off). "
                    f"Got {getattr(cfg, name)!r} instead."
                )
        if cfg.retrain_data not in RETRAIN_DATA:
            raise ConfigError(
                f"agent.retrain_data must be one of {', '.join(RETRAIN_DATA)}. "
                f"Got {cfg.retrain_data!r} instead."
            )
        if cfg.rollout not in ROLLOUT_MODES:
            raise ConfigError(
                f"agent.rollout must be one of {', '.join(ROLLOUT_MODES)}. "
                f"Got {cfg.rollout!r} instead."
            )
        if cfg.traffic_rows < 10 or cfg.min_labelled_rows < 10:
            raise ConfigError("agent.traffic_rows and agent.min_labelled_rows must be >= 10.")
        steps = tuple(cfg.canary_steps)
        if (
            not steps
            or any(not 0 < s <= 1 for s in steps)
            or list(steps) != sorted(set(steps))
            or steps[-1] != 1.0
        ):
            raise ConfigError(
                "agent.canary_steps must be increasing traffic shares in (0, 1] ending at 1.0. "
                f"Got {list(steps)!r} instead.",
                hint="e.g. canary_steps = [0.1, 0.25, 0.5, 1.0]",
            )
        return cls(
            model=model,
            interval=timedelta(seconds=cfg.interval_seconds),
            lease=timedelta(seconds=cfg.lease_seconds),
            schedule=CronSchedule.parse(cfg.schedule) if cfg.schedule.strip() else None,
            on_drift=cfg.on_drift,
            performance_drop=cfg.performance_drop,
            estimated_drop=cfg.estimated_drop,
            retrain_data=cfg.retrain_data,
            traffic_rows=cfg.traffic_rows,
            min_labelled_rows=cfg.min_labelled_rows,
            rollout=cfg.rollout,
            canary_steps=steps,
            step_duration=timedelta(seconds=cfg.step_seconds),
        )


# --------------------------------------------------------------------------------------------
# Requests (manual retrain, and what triggers record)
# --------------------------------------------------------------------------------------------


def _requests(conn: Any, model: str) -> tuple[list[events.Event], dict[int, events.Event]]:
    """All retrain requests of ``model`` and the finishing event of each finished one."""
    found = events.query(conn, model=model, kinds=(REQUESTED, FINISHED))
    requested = [e for e in found if e.kind == REQUESTED]
    finished = {int(e.payload["request_id"]): e for e in found if e.kind == FINISHED}
    return requested, finished


def request_retrain(
    ws: Workspace,
    model: str,
    *,
    trigger: str,
    key: str,
    details: dict[str, Any] | None = None,
    actor: str = ACTOR,
    reason: str = "",
    now: datetime | None = None,
) -> int | None:
    """Record a retrain request unless one with ``key`` exists; returns its event id or None."""
    with ws.metadata.write() as conn:
        registry.lock_model(conn, model)
        requested, _ = _requests(conn, model)
        if any(e.payload.get("key") == key for e in requested):
            return None
        return events.record(
            conn,
            REQUESTED,
            actor=actor,
            model=model,
            payload={"trigger": trigger, "key": key, "details": details or {}},
            reason=reason or f"{trigger} trigger",
            ts=now,
        )


def request_manual_retrain(
    ws: Workspace, *, actor: str, reason: str = "", now: datetime | None = None
) -> int:
    """``closedloop retrain``: ask the agent to retrain the pipeline's model on its next pass."""
    model = ws.settings.pipeline.model
    if not model:
        raise ConfigError(
            "pipeline.model is not set.", hint="Set [pipeline] model in closedloop.toml."
        )
    registry.get_model_id(ws, model)  # NotFoundError for an unknown model
    number = request_retrain(
        ws,
        model,
        trigger="manual",
        key=f"manual:{uuid.uuid4().hex}",
        actor=actor,
        reason=reason or "manual retrain",
        now=now,
    )
    assert number is not None  # a fresh key is never a duplicate
    return number


def retrain_status(ws: Workspace, model: str, *, limit: int = 20) -> list[dict[str, Any]]:
    """The latest retrain requests, newest first, with their outcome (``pending`` if none)."""
    with ws.metadata.read() as conn:
        requested, finished = _requests(conn, model)
    rows = []
    for request in reversed(requested[-limit:]):
        done = finished.get(request.id)
        rows.append(
            {
                "request_id": request.id,
                "ts": request.ts.isoformat(),
                "trigger": request.payload.get("trigger"),
                "key": request.payload.get("key"),
                "actor": request.actor,
                "reason": request.reason,
                "status": done.payload.get("status") if done else "pending",
                "version": done.version if done else None,
                "finished_at": done.ts.isoformat() if done else None,
                "detail": done.reason if done else "",
            }
        )
    return rows


def agent_status(ws: Workspace, *, now: datetime | None = None) -> dict[str, Any]:
    """``closedloop agent status``: the lease (who is active, until when) and the latest
    retrains of the pipeline's model."""
    from closedloop.services import lease

    current = lease.current(ws)
    model = ws.settings.pipeline.model
    return {
        "lease": current.to_dict() if current else None,
        "active": bool(current and current.expires_at > (now or utcnow())),
        "model": model,
        "retrains": retrain_status(ws, model) if model else [],
    }


# --------------------------------------------------------------------------------------------
# The agent
# --------------------------------------------------------------------------------------------


@dataclass
class PassReport:
    """What one pass did (``active`` is False when another agent holds the lease)."""

    ts: datetime
    active: bool
    actions: list[dict[str, Any]] = field(default_factory=list)

    def add(self, step: str, **details: Any) -> None:
        self.actions.append({"step": step, **details})
        log.info("agent %s %s", step, details)

    def to_dict(self) -> dict[str, Any]:
        return {"ts": self.ts.isoformat(), "active": self.active, "actions": self.actions}


class Agent:
    """One agent process's reconcile loop (see the module docstring)."""

    def __init__(
        self,
        ws: Workspace,
        *,
        clock: Callable[[], datetime] = utcnow,
        holder: str | None = None,
        alerts: AlertSender | None = None,
        guardrails: GuardrailPolicy | None = None,
    ) -> None:
        self.ws = ws
        self.policy = AgentPolicy.from_workspace(ws)
        if alerts is None:  # a refused webhook is an error at start, not a silent loss later
            from closedloop.services.alerts import webhook_from

            webhook_from(ws.settings.alerts)
        self.clock = clock
        self.lease = LeaseHolder(ws, holder=holder, ttl=self.policy.lease, clock=clock)
        self.holder = self.lease.holder
        self._alerts = alerts
        self._own_alerts = alerts is None
        self.guardrails = guardrails
        self._heartbeat_stop = threading.Event()

    # -- alerts -------------------------------------------------------------------------------

    @property
    def alerts(self) -> AlertSender:
        if self._alerts is None:
            from closedloop.services.alerts import AlertSender

            self._alerts = AlertSender(self.ws)
        return self._alerts

    def _alert(
        self,
        kind: str,
        severity: str,
        title: str,
        text: str,
        *,
        version: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        from closedloop.domain.alerts import Alert

        alert = Alert(
            kind=kind,
            severity=severity,
            model=self.policy.model,
            version=version,
            title=title,
            text=text,
            details=details or {},
            ts=self._now(),
        )
        try:
            self.alerts.send(alert, actor=ACTOR)
        except ClosedloopError as exc:  # an alert must never stop the loop
            log.warning("alert %s could not be recorded: %s", kind, exc.message)

    def _alerted_sources(self, kind: str) -> set[int]:
        """Source event ids that already have an alert of ``kind``."""
        found = events.list_events(self.ws, model=self.policy.model, kinds=("alert.raised",))
        out: set[int] = set()
        for event in found:
            if event.payload.get("kind") != kind:
                continue
            source = (event.payload.get("details") or {}).get("source_event")
            if isinstance(source, int):
                out.add(source)
        return out

    # -- the loop -----------------------------------------------------------------------------

    def _now(self) -> datetime:
        return as_utc(self.clock())

    def _check_lease(self) -> None:
        if not self.lease.renew():
            raise LeaseLost(f"Agent {self.holder} lost the lease to another agent; it stops.")

    def run_once(self) -> PassReport:
        """One reconcile pass (does nothing but report when another agent is active)."""
        report = PassReport(ts=self._now(), active=False)
        if not self.lease.acquire():
            return report
        report.active = True
        heartbeat = self._start_heartbeat()
        try:
            self._pass(report)
        except LeaseLost as exc:
            report.add("lease_lost", message=exc.message)
        finally:
            self._heartbeat_stop.set()
            heartbeat.join()
            self._heartbeat_stop.clear()
        return report

    def _start_heartbeat(self) -> threading.Thread:
        """Renew the lease every third of its time while a (possibly long) pass runs."""
        every = max(self.policy.lease.total_seconds() / 3, 0.05)

        def beat() -> None:
            while not self._heartbeat_stop.wait(every):
                try:
                    if not self.lease.renew():
                        return
                except ClosedloopError as exc:
                    log.warning("lease renewal failed: %s", exc.message)

        thread = threading.Thread(target=beat, name="closedloop-agent-lease", daemon=True)
        thread.start()
        return thread

    def run(self, stop: threading.Event, *, max_passes: int | None = None) -> None:
        """Pass after pass every ``agent.interval_seconds`` until ``stop`` is set."""
        passes = 0
        try:
            while not stop.is_set():
                try:
                    report = self.run_once()
                    if not report.active:
                        log.debug("another agent holds the lease; waiting")
                except ClosedloopError as exc:  # e.g. the store is down: try again next pass
                    log.warning("agent pass failed: %s", exc.message)
                except Exception:  # a bug must not stop the loop; the next pass tries again
                    log.exception("agent pass failed unexpectedly")
                passes += 1
                if max_passes is not None and passes >= max_passes:
                    return
                stop.wait(self.policy.interval.total_seconds())
        finally:
            self.close()

    def close(self) -> None:
        """Release the lease and flush pending alerts."""
        try:
            self.lease.release()
        except ClosedloopError as exc:
            log.warning("could not release the lease: %s", exc.message)
        if self._alerts is not None and self._own_alerts:
            self._alerts.close(timeout=5.0)

    def _pass(self, report: PassReport) -> None:
        model = self.policy.model
        try:
            registry.get_model_id(self.ws, model)
        except NotFoundError:
            report.add("idle", reason=f"no model {model!r} registered yet")
            return
        self._rollbacks(report)
        self._check_lease()
        self._rollout(report)
        self._check_lease()
        self._triggers(report)
        self._check_lease()
        self._retrain(report)

    # -- 1. rollbacks -------------------------------------------------------------------------

    def _rollbacks(self, report: PassReport) -> None:
        moves = events.list_events(self.ws, model=self.policy.model, kinds=("alias.rollback",))
        if not moves:
            return
        from closedloop.services.alerts import rollback_alert

        done = self._alerted_sources("rollback_done")
        for move in moves:
            if move.id in done:  # raised by the rollback itself, or by an earlier pass
                continue
            try:
                self.alerts.send(rollback_alert(move), actor=ACTOR)
            except ClosedloopError as exc:  # an alert must never stop the loop
                log.warning("alert rollback_done could not be recorded: %s", exc.message)
            report.add("alert", kind="rollback_done", source_event=move.id)

    # -- 2. the running rollout ---------------------------------------------------------------

    def _rollout(self, report: PassReport) -> None:
        model = self.policy.model
        current = rollouts.state(self.ws, model)
        if current.mode != "canary":
            return
        try:
            result = rollouts.evaluate(
                self.ws, model, now=self._now(), actor=ACTOR, policy=self.guardrails
            )
        except ConflictError as exc:  # someone moved the rollout meanwhile: next pass
            report.add("rollout_skipped", reason=exc.message)
            return
        action = result.get("action")
        reasons = result.get("verdict", {}).get("reasons", [])
        report.add("rollout", action=action, version=current.candidate, reasons=reasons)
        if action == "abort":
            self._alert(
                "canary_aborted",
                "critical",
                f"{model}: canary v{current.candidate} aborted",
                f"The canary v{current.candidate} failed its guardrails and was stopped; "
                f"production v{current.production} serves all traffic. "
                + "; ".join(str(r) for r in reasons),
                version=current.candidate,
                details={"reasons": reasons, "production": current.production},
            )

    # -- 3. monitor and triggers --------------------------------------------------------------

    def _triggers(self, report: PassReport) -> None:
        model = self.policy.model
        production = registry.resolve_alias(self.ws, model)
        if production is not None:
            self._monitor(report, production)
        self._schedule(report)

    def _new_traffic(self, production: int) -> bool:
        """Has ``production`` answered anything since its last check? (A pass with no new
        traffic records no check: the same window would only be checked again.)"""
        from closedloop.services.monitors import last_check_without_new_traffic

        return last_check_without_new_traffic(self.ws, self.policy.model, production) is None

    def _monitor(self, report: PassReport, production: int) -> None:
        from closedloop.services.monitors import run_monitor

        model = self.policy.model
        if not self._new_traffic(production):
            report.add("monitor", state="no_new_traffic", version=production)
            return
        try:
            result = run_monitor(self.ws, model, now=self.clock, actor=ACTOR)
        except ConflictError as exc:  # not enough traffic yet
            report.add("monitor", state="insufficient_data", reason=exc.message)
            return
        decision = result.decision
        report.add(
            "monitor",
            state=decision.state,
            drifted=result.check.report.drifted,
            columns=list(result.check.report.drifted_columns),
            check_id=result.check.id,
        )
        if result.alerted and result.alert_event_id is not None:
            columns = list(result.check.report.drifted_columns)
            why = "".join(
                f"\n• {'' if r.counted else '(not counted) '}{r.text}"
                for r in result.check.reasons()
            )
            self._alert(
                "drift",
                "warning",
                f"{model}: drift on v{production}",
                f"{decision.reason.rstrip('.')}. Why:{why}",
                version=production,
                details={"source_event": result.alert_event_id, "check_id": result.check.id},
            )
            if self.policy.on_drift:
                self._request(
                    report,
                    "drift",
                    f"drift:{result.alert_event_id}",
                    {"alert_event": result.alert_event_id, "check_id": result.check.id},
                    f"drift alert on v{production}: {', '.join(columns)}",
                )
        self._performance(report, production, result.check.outputs, result.check.id)

    def _performance(
        self, report: PassReport, production: int, outputs: dict[str, Any], check_id: int
    ) -> None:
        from closedloop.domain.metrics import higher_is_better

        metric = self.ws.settings.pipeline.metric
        info = registry.get_version(self.ws, self.policy.model, production)
        baseline = info.metrics.get(metric)
        performance = outputs.get("performance") or {}
        if baseline is None:
            return
        candidates: list[tuple[str, float, Any, int]] = []
        realised = performance.get("realised") or {}
        if self.policy.performance_drop > 0 and realised.get(metric) is not None:
            candidates.append(
                (
                    "performance",
                    self.policy.performance_drop,
                    realised[metric],
                    int(realised.get("n_labelled", 0)),
                )
            )
        estimated = ((performance.get("estimated") or {}).get("metrics") or {}).get(metric)
        if self.policy.estimated_drop > 0 and estimated and estimated.get("value") is not None:
            n = int((performance.get("estimated") or {}).get("n", 0))
            candidates.append(
                ("estimated_performance", self.policy.estimated_drop, estimated["value"], n)
            )
        for trigger, threshold, value, n in candidates:
            check = PerformanceCheck(
                metric=metric,
                baseline=float(baseline),
                current=float(value),
                threshold=threshold,
                higher_is_better=higher_is_better(metric),
                n_rows=n,
            )
            report.add(trigger, **check.to_dict())
            if not check.dropped:
                continue
            kind_text = "realised" if trigger == "performance" else "estimated (label-free)"
            moved = "dropped" if check.higher_is_better else "rose"  # rmse, mae, log_loss
            self._alert(
                "performance_drop",
                "warning",
                f"{self.policy.model}: {kind_text} {metric} {moved} on v{production}",
                f"{kind_text} {metric} {check.current:.3f} vs {check.baseline:.3f} held out "
                f"(worse by {check.drop:.3f} > {threshold}).",
                version=production,
                details={"source_event": None, "check_id": check_id, **check.to_dict()},
            )
            self._request(
                report,
                trigger,
                f"{trigger}:{check_id}",
                {"check_id": check_id, **check.to_dict()},
                f"{kind_text} {metric} {moved} by {check.drop:.3f}",
            )

    def _schedule(self, report: PassReport) -> None:
        schedule = self.policy.schedule
        if schedule is None:
            return
        model = self.policy.model
        found = events.list_events(self.ws, model=None, kinds=(REQUESTED, "agent.lease_acquired"))
        fired = [
            datetime.fromisoformat(e.payload["details"]["fire_time"])
            for e in found
            if e.kind == REQUESTED and e.model == model and e.payload.get("trigger") == "schedule"
        ]
        started = [e.ts for e in found if e.kind == "agent.lease_acquired"]
        since = min(started) if started else self._now()
        due = schedule_due(
            schedule, last_run=max(fired) if fired else None, since=since, now=self._now()
        )
        if due is not None:
            self._request(
                report,
                "schedule",
                f"schedule:{due.isoformat()}",
                {"fire_time": due.isoformat(), "cron": schedule.expression},
                f"schedule {schedule.expression!r} fired at {due.isoformat()}",
            )

    def _request(
        self, report: PassReport, trigger: str, key: str, details: dict[str, Any], reason: str
    ) -> None:
        with self.ws.metadata.read() as conn:
            requested, finished = _requests(conn, self.policy.model)
        pending = [e for e in requested if e.id not in finished]
        if pending and trigger != "schedule":
            report.add("trigger_coalesced", trigger=trigger, pending_request=pending[0].id)
            return
        number = request_retrain(
            self.ws,
            self.policy.model,
            trigger=trigger,
            key=key,
            details=details,
            actor=ACTOR,
            reason=reason,
            now=self._now(),
        )
        if number is not None:
            report.add("retrain_requested", trigger=trigger, request_id=number, key=key)

    # -- 4. retraining ------------------------------------------------------------------------

    def _retrain(self, report: PassReport) -> None:
        model = self.policy.model
        if rollouts.state(self.ws, model).mode == "canary":
            return  # one change at a time: the running canary finishes first
        with self.ws.metadata.read() as conn:
            requested, finished = _requests(conn, model)
        pending = [e for e in requested if e.id not in finished]
        if not pending:
            return
        request = pending[0]
        attempts = self._attempts(request.id)
        if attempts >= MAX_ATTEMPTS and self._version_for(request.id) is None:
            # every earlier attempt died inside this step (e.g. the trainer ran out of memory
            # and took the agent with it): give up instead of crash-looping
            self._failed(
                report,
                request,
                ClosedloopError(
                    f"Retrain request {request.id} was started {attempts} times and never "
                    "finished (each agent stopped during it); giving up.",
                ),
            )
            return
        self._record(STARTED, request, {"holder": self.holder, "token": self.lease.token})
        existing = self._version_for(request.id)
        try:
            if existing is not None:
                version, gate = existing
                report.add("retrain_resumed", request_id=request.id, version=version)
            else:
                version, gate = self._train(request)
        except ClosedloopError as exc:
            self._failed(report, request, exc)
            return
        self._check_lease()
        self._release(report, request, version, gate)

    def _attempts(self, request_id: int) -> int:
        started = events.list_events(self.ws, model=self.policy.model, kinds=(STARTED,))
        return sum(1 for e in started if e.payload.get("request_id") == request_id)

    def _version_for(self, request_id: int) -> tuple[int, dict[str, Any]] | None:
        """A version an earlier attempt registered for this request (it crashed after)."""
        for info in registry.list_versions(self.ws, self.policy.model):
            if (info.lineage or {}).get("retrain_request") == request_id:
                return info.number, dict((info.lineage or {}).get("gate") or {})
        return None

    def _train(self, request: events.Event) -> tuple[int, dict[str, Any]]:
        from closedloop.services import pipeline

        frame, source = self._training_data()
        result = pipeline.train(
            self.ws,
            frame=frame,
            source=source,
            actor=ACTOR,
            reason=f"retrain request {request.id}: {request.reason}",
            promote=False,
            lineage_extra={
                "retrain_request": request.id,
                "trigger": request.payload.get("trigger"),
            },
        )
        return result.version, {
            **result.decision.to_dict(),
            "incumbent_version": result.incumbent_version,
        }

    def _training_data(self) -> tuple[pd.DataFrame | None, str | None]:
        mode = self.policy.retrain_data
        if mode == "loader":
            return None, None
        traffic, ignored = self._labelled_traffic()
        described = f"traffic: last {len(traffic)} labelled rows"
        if ignored:
            reasons = ", ".join(f"{n} {reason}" for reason, n in ignored.items())
            described += f" ({sum(ignored.values())} labels ignored: {reasons})"
        if mode == "traffic":
            return traffic, described
        import pandas as pd

        from closedloop.services.pipeline import load_frame

        frame, source = load_frame(self.ws)
        combined = pd.concat([frame, traffic[frame.columns]], ignore_index=True)
        return combined, f"{source} + {described}"

    def _labelled_traffic(self) -> tuple[pd.DataFrame, dict[str, int]]:
        """The answered logged rows that have a label of the target's type (the target column
        holds it), and the labels left out, by reason: those :func:`match_feedback` could not
        join (an unknown request id is ``unmatched``), and ``unreadable`` ones (not of the
        target's type, or not one of its classes)."""
        from closedloop.domain.performance import match_feedback
        from closedloop.errors import InvalidInputError

        model = self.policy.model
        target = self.ws.settings.pipeline.target
        feedback = self.ws.feedback_log().read(model)
        log_ = self.ws.prediction_log()
        try:
            rows = log_.read(model)
        finally:
            log_.close()
        if len(rows) and "_role" in rows:
            rows = rows[rows["_role"] == "primary"]
        if len(rows) and "_status" in rows:  # answered requests only (HTTP status < 400)
            import pandas as pd

            status = pd.to_numeric(rows["_status"], errors="coerce").fillna(200)
            rows = rows[(status < 400).to_numpy()]
        if len(rows) and "_prediction" in rows:
            rows = rows[rows["_prediction"].notna().to_numpy()]
        match = match_feedback(rows, feedback) if len(rows) and len(feedback) else None
        labelled = rows[:0] if match is None else match.joined
        ignored = {} if match is None else dict(match.ignored)
        production = registry.resolve_alias(self.ws, model)
        if len(labelled) and production is not None:  # labels of the target's type ("2" is 2)
            from closedloop.services.outputs import typed_labels, version_target

            typed = typed_labels(labelled, version_target(self.ws, model, production))
            if len(typed) < len(labelled):
                ignored["unreadable"] = len(labelled) - len(typed)
            labelled = typed
        if len(labelled) < self.policy.min_labelled_rows:
            left_out = (
                f" ({sum(ignored.values())} labels ignored: "
                + ", ".join(f"{n} {reason}" for reason, n in ignored.items())
                + ")"
                if ignored
                else ""
            )
            raise InvalidInputError(
                f"Only {len(labelled)} logged rows of {model!r} have labels{left_out}; a traffic "
                f"retrain needs at least agent.min_labelled_rows = "
                f"{self.policy.min_labelled_rows}.",
                hint=f"POST labels to /models/{model}/feedback, or set agent.retrain_data = "
                '"loader".',
            )
        labelled = labelled.tail(self.policy.traffic_rows)
        features = [c for c in labelled.columns if not str(c).startswith("_")]
        frame = labelled[features].copy()
        frame[target] = labelled["_label"].to_numpy()
        return frame.reset_index(drop=True), ignored

    def _failed(self, report: PassReport, request: events.Event, exc: ClosedloopError) -> None:
        trace = (exc.details or {}).get("traceback") or "".join(traceback.format_exception(exc))
        self._record(
            FINISHED,
            request,
            {"status": "failed", "error": exc.message, "code": exc.code, "traceback": trace},
            reason=exc.message,
        )
        report.add("retrain_failed", request_id=request.id, error=exc.message)
        self._alert(
            "retrain_failed",
            "critical",
            f"{self.policy.model}: retraining failed",
            f"Retrain request {request.id} ({request.payload.get('trigger')}) failed: "
            f"{exc.message} Production was not changed.",
            details={"source_event": request.id, "error": exc.message, "traceback": trace},
        )

    def _release(
        self, report: PassReport, request: events.Event, version: int, gate: dict[str, Any]
    ) -> None:
        """Start the canary (or promote) for a candidate that passed the gate."""
        model = self.policy.model
        if not gate.get("passed"):
            reason = str(gate.get("reason") or "the gate rejected the candidate")
            self._record(
                FINISHED, request, {"status": "rejected", "gate": gate}, version, reason=reason
            )
            report.add("gate_rejected", request_id=request.id, version=version, reason=reason)
            self._alert(
                "gate_rejected",
                "warning",
                f"{model}: candidate v{version} rejected by the gate",
                reason,
                version=version,
                details={"source_event": request.id, "gate": gate},
            )
            return
        status = "promoted" if self.policy.rollout == "promote" else "canary"
        try:
            if self.policy.rollout == "promote":
                registry.set_alias(
                    self.ws,
                    model,
                    registry.PRODUCTION,
                    version,
                    actor=ACTOR,
                    reason=f"gate passed (retrain request {request.id})",
                    expected=gate.get("incumbent_version"),
                )
            else:
                current = rollouts.state(self.ws, model)
                if not (current.mode == "canary" and current.candidate == version):
                    rollouts.start_canary(
                        self.ws,
                        model,
                        version,
                        weight=self.policy.canary_steps[0],
                        steps=self.policy.canary_steps,
                        step_duration=self.policy.step_duration,
                        actor=ACTOR,
                        reason=f"gate passed (retrain request {request.id})",
                        now=self._now(),
                    )
        except ConflictError as exc:  # production moved while we trained: do not overwrite
            self._record(
                FINISHED,
                request,
                {"status": "superseded", "gate": gate, "error": exc.message},
                version,
                reason=exc.message,
            )
            report.add("retrain_superseded", request_id=request.id, reason=exc.message)
            return
        self._record(FINISHED, request, {"status": status, "gate": gate}, version)
        report.add("retrain_released", request_id=request.id, version=version, status=status)

    def _record(
        self,
        kind: str,
        request: events.Event,
        payload: dict[str, Any],
        version: int | None = None,
        *,
        reason: str = "",
    ) -> None:
        """Record a step of ``request``; ``retrain.finished`` is written at most once."""
        with self.ws.metadata.write() as conn:
            registry.lock_model(conn, self.policy.model)
            if kind == FINISHED:
                _, finished = _requests(conn, self.policy.model)
                if request.id in finished:
                    raise LeaseLost(
                        f"Retrain request {request.id} was finished by another agent meanwhile."
                    )
            events.record(
                conn,
                kind,
                actor=ACTOR,
                model=self.policy.model,
                version=version,
                payload={"request_id": request.id, "holder": self.holder, **payload},
                reason=reason or request.reason,
                ts=self._now(),
            )


__all__ = [
    "Agent",
    "AgentPolicy",
    "LeaseLost",
    "PassReport",
    "agent_status",
    "request_manual_retrain",
    "request_retrain",
    "retrain_status",
]
