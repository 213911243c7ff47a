"""Alert channels: the event log, the ``closedloop.alerts`` logger, a JSON-lines file and a
webhook delivered by one background thread.

:meth:`AlertSender.send` records an ``alert.raised`` event (payload: the alert's dict), logs the
alert, appends it to ``alerts.log_file`` when set, and queues the webhook delivery; it returns at
once, whatever the receiver does. The background thread POSTs the Slack-compatible body
(:func:`closedloop.domain.alerts.slack_body`), signed when ``alerts.webhook_secret`` is set, and
retries timeouts, connection errors and statuses other than 2xx (except 4xx other than 408 and
429) up to ``alerts.retries`` times with exponential backoff. The outcome is an
``alert.delivered`` or ``alert.failed`` event; an alert that does not fit in the bounded queue
is counted and recorded as ``alert.dropped``. Outcome payloads carry ``raised_event``, the id
of the ``alert.raised`` event they answer.

The webhook's host is resolved and every address checked
(:func:`closedloop.domain.alerts.address_refusal`) when the sender is made — a refused one is a
:class:`ConfigError` naming ``alerts.webhook_url`` — and again by each connection, which
connects only to the addresses it has just checked (a name that changes its answer between the
check and the connection, DNS rebinding, gains nothing). A refused connection is not retried:
it ends in ``alert.failed`` with the reason. ``alerts.allow_private_targets`` or
``alerts.allowed_hosts`` lift the refusal.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from http.client import HTTPException
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Connection, Select, select

from closedloop import __version__
from closedloop.domain.alerts import Alert, address_refusal, backoff, sign, slack_body
from closedloop.errors import (
    ClosedloopError,
    ConfigError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
)
from closedloop.services import events
from closedloop.services.events import Event, as_utc, utcnow
from closedloop.services.workspace import Workspace
from closedloop.settings import AlertSettings
from closedloop.storage.metadata.tables import events as events_table

RAISED = "alert.raised"
DELIVERED = "alert.delivered"
FAILED = "alert.failed"
DROPPED = "alert.dropped"
OUTCOMES = (DELIVERED, FAILED, DROPPED)
QUEUE_SIZE = 1000
"""Alerts waiting for delivery at most; more are dropped (counted and recorded)."""
RETRIED_CLIENT_ERRORS = frozenset({408, 429})
ERROR_BODY_CHARS = 300
RESPONSE_BYTES = 65536

logger = logging.getLogger("closedloop.alerts")

_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.CRITICAL}


# --- settings --------------------------------------------------------------------------------

Resolver = Callable[[str, int], list[str]]
"""``(host, port) -> addresses``: how a host name is looked up (``socket.getaddrinfo``)."""


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, for TCP on ``port``."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class TargetPolicy:
    """Which webhook addresses may be reached (``[alerts]`` allow_private_targets,
    allowed_hosts); loopback always may."""

    allow_private: bool = False
    allowed_hosts: frozenset[str] = frozenset()

    def refusal(self, host: str, addresses: list[str]) -> str | None:
        """Why ``host`` (resolved to ``addresses``) may not be reached, or None."""
        if self.allow_private or host.lower().strip("[]") in self.allowed_hosts:
            return None
        for address in addresses:
            reason = address_refusal(address)
            if reason is not None:
                named = address.split("%", 1)[0] == host.strip("[]")
                return reason if named else f"{reason} ({host} resolves to it)"
        return None


@dataclass(frozen=True)
class Webhook:
    """Where and how alerts are POSTed (from the ``[alerts]`` settings)."""

    url: str
    secret: bytes
    timeout: float
    retries: int
    policy: TargetPolicy = TargetPolicy()

    @property
    def receiver(self) -> str:
        """``scheme://host[:port]``: the URL without its path (which may hold a token)."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def webhook_from(settings: AlertSettings, resolver: Resolver = resolve) -> Webhook | None:
    """The configured webhook, or None when ``alerts.webhook_url`` is empty. Its host is
    resolved with ``resolver`` and refused (:class:`ConfigError`) when an address is not
    allowed; a host that does not resolve now is checked again when an alert is sent."""
    url = settings.webhook_url.strip()
    if not url:
        return None
    _check_url(url)
    policy = TargetPolicy(
        bool(settings.allow_private_targets),
        frozenset(h.strip().lower().strip("[]") for h in settings.allowed_hosts if h.strip()),
    )
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        addresses = resolver(host, parts.port or (443 if parts.scheme == "https" else 80))
    except OSError:
        addresses = []  # DNS may be down for now; every connection checks again
    refused = policy.refusal(host, addresses)
    if refused is not None:
        raise ConfigError(
            f"The setting alerts.webhook_url must not point at a link-local or private "
            f"address: {refused}.",
            hint="Set alerts.allow_private_targets = true, or list the host in "
            "alerts.allowed_hosts, when the receiver really is on your private network.",
            details={"setting": "alerts.webhook_url", "reason": refused},
        )
    if not settings.timeout_seconds > 0:
        raise ConfigError(
            f"The setting alerts.timeout_seconds must be a number of seconds > 0. "
            f"Got {settings.timeout_seconds!r} instead."
        )
    if settings.retries < 0:
        raise ConfigError(
            f"The setting alerts.retries must be an int >= 0. Got {settings.retries!r} instead."
        )
    secret = settings.webhook_secret.encode("utf-8")
    return Webhook(url, secret, float(settings.timeout_seconds), int(settings.retries), policy)


def _check_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise ConfigError(
            f"The setting alerts.webhook_url must be an http:// or https:// URL with a host. "
            f"Got {url!r} instead.",
            hint="Fix [alerts] webhook_url in closedloop.toml or CLOSEDLOOP_ALERTS_WEBHOOK_URL; "
            "leave it empty to send no webhook.",
        )


# --- one delivery attempt --------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """The result of one POST: an HTTP status, or an error without one (``refused``: the
    target's address is not allowed; never retried)."""

    status: int | None
    error: str | None = None
    refused: bool = False

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        if self.refused:
            return False
        if self.status is None:
            return True
        return not (400 <= self.status < 500) or self.status in RETRIED_CLIENT_ERRORS


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an unsuccessful delivery (never a silent GET elsewhere)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class TargetRefused(OSError):
    """A connection to an address the webhook may not reach (never attempted)."""


def _guarded_connect(policy: TargetPolicy, resolver: Resolver) -> Callable[..., socket.socket]:
    """``socket.create_connection`` that resolves once, checks every address with ``policy``,
    and connects only to those addresses."""

    def connect(
        address: tuple[str, int],
        timeout: float | None = None,
        source_address: tuple[str, int] | None = None,
        **_: Any,
    ) -> socket.socket:
        host, port = address
        addresses = resolver(host, port)
        refused = policy.refusal(host, addresses)
        if refused is not None:
            raise TargetRefused(f"refused: {refused}")
        error: OSError = OSError(f"{host} resolves to no address")
        for ip in addresses:
            try:
                return socket.create_connection((ip, port), timeout, source_address)
            except OSError as exc:
                error = exc
        raise error

    return connect


class _Guarded(urllib.request.AbstractHTTPHandler):
    """Opens HTTP(S) connections through :func:`_guarded_connect`."""

    def __init__(self, connect: Callable[..., socket.socket]) -> None:
        super().__init__()
        self._connect = connect

    def do_open(self, http_class: Any, req: Any, **kwargs: Any) -> Any:
        def connection(host: str, **options: Any) -> http.client.HTTPConnection:
            made: http.client.HTTPConnection = http_class(host, **options)
            made._create_connection = self._connect  # type: ignore[attr-defined]
            return made

        return super().do_open(connection, req, **kwargs)


class _GuardedHTTP(_Guarded, urllib.request.HTTPHandler):
    pass


class _GuardedHTTPS(_Guarded, urllib.request.HTTPSHandler):
    pass


def opener(policy: TargetPolicy, resolver: Resolver = resolve) -> urllib.request.OpenerDirector:
    """A URL opener that follows no redirect and connects only to allowed addresses."""
    connect = _guarded_connect(policy, resolver)
    return urllib.request.build_opener(_NoRedirect(), _GuardedHTTP(connect), _GuardedHTTPS(connect))


def _headers(webhook: Webhook, alert: Alert, body: bytes) -> dict[str, str]:
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"closedloop/{__version__}",
        "X-Closedloop-Timestamp": timestamp,
        "X-Closedloop-Alert-Id": alert.id,
    }
    if webhook.secret:
        headers["X-Closedloop-Signature"] = sign(webhook.secret, timestamp, body, alert_id=alert.id)
    return headers


def post(
    webhook: Webhook,
    alert: Alert,
    body: bytes,
    timeout: float,
    via: urllib.request.OpenerDirector | None = None,
) -> Attempt:
    """POST ``body`` once (signed afresh, so a retry's timestamp is current) through ``via``
    (default: :func:`opener` of the webhook's policy)."""
    request = urllib.request.Request(
        webhook.url, data=body, method="POST", headers=_headers(webhook, alert, body)
    )
    via = via or opener(webhook.policy)
    try:
        with via.open(request, timeout=timeout) as response:
            response.read(RESPONSE_BYTES)
            return Attempt(int(response.status))
    except urllib.error.HTTPError as exc:
        with exc:
            text = exc.read(ERROR_BODY_CHARS).decode("utf-8", "replace").strip()
        return Attempt(exc.code, f"HTTP {exc.code} {exc.reason}" + (f": {text}" if text else ""))
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TargetRefused):
            return Attempt(None, str(exc.reason), refused=True)
        return Attempt(None, _describe(exc.reason, timeout))
    except TargetRefused as exc:
        return Attempt(None, str(exc), refused=True)
    except (TimeoutError, OSError, HTTPException) as exc:
        return Attempt(None, _describe(exc, timeout))


def _describe(reason: object, timeout: float) -> str:
    if isinstance(reason, TimeoutError) or "timed out" in str(reason):
        return f"timed out after {timeout:g} s"
    if isinstance(reason, BaseException):
        return f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__
    return str(reason)


# --- the sender ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Delivery:
    alert: Alert
    event_id: int | None
    actor: str


class AlertSender:
    """Sends alerts through the workspace's channels; webhooks go out in one background thread.

    ``backoff_base``, ``backoff_cap`` and ``jitter`` shape the delays between retries
    (:func:`closedloop.domain.alerts.backoff`); ``clock`` stamps alerts raised without ``ts``;
    ``resolver`` looks up the webhook's host (:func:`resolve`).
    Call :meth:`close` when done (or use the sender as a context manager).
    """

    def __init__(
        self,
        ws: Workspace,
        *,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
        jitter: float = 0.2,
        queue_size: int = QUEUE_SIZE,
        clock: Callable[[], datetime] = utcnow,
        resolver: Resolver = resolve,
    ) -> None:
        self.ws = ws
        self.webhook = webhook_from(ws.settings.alerts, resolver)
        self._opener = None if self.webhook is None else opener(self.webhook.policy, resolver)
        log_file = ws.settings.alerts.log_file.strip()
        self.log_file = Path(ws.settings.resolve_path(log_file)) if log_file else None
        self.backoff_base, self.backoff_cap, self.jitter = backoff_base, backoff_cap, jitter
        if queue_size < 1:
            raise InvalidInputError(f"queue_size must be an int >= 1. Got {queue_size!r} instead.")
        self.queue_size = queue_size
        self._clock = clock
        self._cond = threading.Condition()
        self._queue: deque[_Delivery] = deque()
        self._pending = 0
        self._dropped = 0
        self._closed = False
        self._deadline: float | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._file_lock = threading.Lock()

    def __enter__(self) -> AlertSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def dropped(self) -> int:
        """Alerts dropped because the delivery queue was full."""
        return self._dropped

    def send(self, alert: Alert, *, actor: str) -> int:
        """Record, log and (in the background) deliver ``alert``; returns the id of its
        ``alert.raised`` event. If the metadata store fails, the log, the file and the webhook
        still get the alert, then the store's error is raised."""
        if self._closed:
            raise ConflictError("This AlertSender is closed.", hint="Create a new AlertSender.")
        alert = alert.stamped(self._clock())
        self._log(alert)
        try:
            event_id = self._record_raised(alert, actor)
        except ClosedloopError:
            self._fan_out(alert, None, actor)
            raise
        self._fan_out(alert, event_id, actor)
        return event_id

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until every queued delivery has its outcome; returns
        whether the queue emptied."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout=timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what can be delivered within ``timeout`` seconds, then stop the thread.
        Alerts still queued are recorded as ``alert.failed`` (0 attempts)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._deadline = time.monotonic() + max(timeout, 0.0)
            self._stopping.set()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(max(timeout, 0.0))
        with self._cond:
            abandoned = list(self._queue)
            self._queue.clear()
        for item in abandoned:
            self._outcome(item, 0, Attempt(None, "not delivered: the sender closed first"))
            self._done()

    # -- channels --

    def _log(self, alert: Alert) -> None:
        where = alert.model + (f" v{alert.version}" if alert.version is not None else "")
        logger.log(
            _LEVELS[alert.severity],
            "%s alert%s: %s%s",
            alert.kind,
            f" on {where}" if where else "",
            alert.title,
            f" — {alert.text}" if alert.text else "",
            extra={"alert": alert.to_dict()},
        )

    def _record_raised(self, alert: Alert, actor: str) -> int:
        with self.ws.metadata.write() as conn:
            return events.record(
                conn,
                RAISED,
                actor=actor,
                model=alert.model or None,
                version=alert.version,
                payload=alert.to_dict(),
                reason=alert.title,
                ts=alert.ts,
            )

    def _fan_out(self, alert: Alert, event_id: int | None, actor: str) -> None:
        self._append_line(alert, event_id)
        if self.webhook is not None:
            self._enqueue(_Delivery(alert, event_id, actor))

    def _append_line(self, alert: Alert, event_id: int | None) -> None:
        if self.log_file is None:
            return
        line = json.dumps({**alert.to_dict(), "event_id": event_id}, sort_keys=True) + "\n"
        try:
            with self._file_lock:
                self.log_file.parent.mkdir(parents=True, exist_ok=True)
                with self.log_file.open("a", encoding="utf-8") as out:
                    out.write(line)
        except OSError as exc:
            logger.error("Cannot append alert %s to %s: %s", alert.id, self.log_file, exc)

    def _enqueue(self, item: _Delivery) -> None:
        with self._cond:
            closed = self._closed
            full = not closed and self._pending >= self.queue_size
            if full:
                self._dropped += 1
            elif not closed:
                self._pending += 1
                self._queue.append(item)
                self._start_thread()
                self._cond.notify_all()
        if closed:
            self._outcome(item, 0, Attempt(None, "not delivered: the sender closed first"))
        elif full:
            self._record_drop(item)

    def _start_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="closedloop-alerts", daemon=True)
            self._thread.start()

    def _record_drop(self, item: _Delivery) -> None:
        logger.warning(
            "Alert %s dropped: %d deliveries already queued (%d dropped so far).",
            item.alert.id,
            self.queue_size,
            self._dropped,
        )
        payload = {"dropped_total": self._dropped, "queue_size": self.queue_size}
        self._write_outcome(item, DROPPED, payload, "the delivery queue was full")

    # -- the background thread --

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._queue) or self._stopping.is_set())
                if not self._queue:
                    return
                item = self._queue.popleft()
            try:
                attempts, last = self._deliver(item)
                self._outcome(item, attempts, last)
            except Exception:  # the thread must outlive any one delivery
                logger.exception("Delivering alert %s failed unexpectedly.", item.alert.id)
            finally:
                self._done()

    def _done(self) -> None:
        with self._cond:
            self._pending -= 1
            self._cond.notify_all()

    def _deliver(self, item: _Delivery) -> tuple[int, Attempt]:
        assert self.webhook is not None
        body = json.dumps(slack_body(item.alert, event_id=item.event_id)).encode("utf-8")
        attempts, last = 0, Attempt(None, "not delivered: the sender closed first")
        while True:
            timeout = min(self.webhook.timeout, self._time_left())
            if timeout <= 0:
                return attempts, _closed(last, attempts)
            attempts += 1
            last = post(self.webhook, item.alert, body, timeout, self._opener)
            if last.ok or not last.retryable or attempts > self.webhook.retries:
                return attempts, last
            delay = backoff(
                attempts, base=self.backoff_base, cap=self.backoff_cap, jitter=self.jitter
            )
            if not self._sleep(delay):
                return attempts, _closed(last, attempts)

    def _time_left(self) -> float:
        """Seconds until the close deadline (infinite while the sender is open)."""
        deadline = self._deadline
        return float("inf") if deadline is None else deadline - time.monotonic()

    def _sleep(self, delay: float) -> bool:
        """Wait ``delay`` seconds; False when a close's deadline would pass first."""
        end = time.monotonic() + delay
        if self._stopping.wait(delay):
            if end - time.monotonic() > self._time_left():
                return False
            time.sleep(max(end - time.monotonic(), 0.0))
        return True

    def _outcome(self, item: _Delivery, attempts: int, last: Attempt) -> None:
        assert self.webhook is not None
        kind = DELIVERED if last.ok else FAILED
        payload = {"attempts": attempts, "http_status": last.status, "error": last.error}
        if last.ok:
            logger.info("Alert %s delivered to %s.", item.alert.id, self.webhook.receiver)
            reason = f"delivered to {self.webhook.receiver}"
        else:
            logger.warning(
                "Alert %s not delivered to %s after %d attempt(s): %s",
                item.alert.id,
                self.webhook.receiver,
                attempts,
                last.error,
            )
            reason = last.error or "not delivered"
        self._write_outcome(item, kind, payload, reason)

    def _write_outcome(
        self, item: _Delivery, kind: str, extra: dict[str, Any], reason: str
    ) -> None:
        assert self.webhook is not None
        payload = {
            "alert_id": item.alert.id,
            "raised_event": item.event_id,
            "receiver": self.webhook.receiver,
            **extra,
        }
        try:
            with self.ws.metadata.write() as conn:
                events.record(
                    conn,
                    kind,
                    actor=item.actor,
                    model=item.alert.model or None,
                    version=item.alert.version,
                    payload=payload,
                    reason=reason,
                )
        except ClosedloopError as exc:
            logger.error("Cannot record %s for alert %s: %s", kind, item.alert.id, exc.message)


def _closed(last: Attempt, attempts: int) -> Attempt:
    if attempts == 0:
        return last
    return Attempt(last.status, f"{last.error}; the sender closed before the next attempt")


# --- reading alerts back ---------------------------------------------------------------------


@dataclass(frozen=True)
class AlertRecord:
    """An ``alert.raised`` event with the outcome of its webhook delivery.

    ``status`` is ``delivered``, ``failed`` or ``dropped`` from the outcome event; else
    ``pending`` when a webhook is configured (being delivered, or the sending process stopped
    first) or ``no webhook``."""

    event: Event
    status: str
    outcome: Event | None = None

    @property
    def alert(self) -> dict[str, Any]:
        return self.event.payload

    def to_dict(self) -> dict[str, Any]:
        result = self.outcome.payload if self.outcome else {}
        return {
            "event_id": self.event.id,
            "ts": self.event.ts.isoformat(),
            "actor": self.event.actor,
            "model": self.event.model,
            "version": self.event.version,
            "alert": self.alert,
            "delivery": {
                "status": self.status,
                "attempts": result.get("attempts"),
                "http_status": result.get("http_status"),
                "error": result.get("error"),
                "receiver": result.get("receiver"),
                "event_id": self.outcome.id if self.outcome else None,
            },
        }


def _event(row: Any) -> Event:
    return Event(
        id=int(row.id),
        ts=as_utc(row.ts),
        actor=row.actor,
        kind=row.kind,
        model=row.model,
        version=row.version,
        payload=dict(row.payload or {}),
        reason=row.reason or "",
    )


def recent_alerts(ws: Workspace, model: str | None = None, *, limit: int = 20) -> list[AlertRecord]:
    """The ``limit`` most recent alerts (of ``model``, when given), newest first."""
    stmt = select(events_table).where(events_table.c.kind == RAISED)
    if model is not None:
        stmt = stmt.where(events_table.c.model == model)
    return _with_outcomes(ws, stmt.order_by(events_table.c.id.desc()).limit(limit))


def alert_record(ws: Workspace, event_id: int) -> AlertRecord:
    """One alert by the id of its ``alert.raised`` event."""
    stmt = select(events_table).where(events_table.c.kind == RAISED, events_table.c.id == event_id)
    found = _with_outcomes(ws, stmt)
    if not found:
        raise NotFoundError(f"No alert was raised as event {event_id}.")
    return found[0]


def _with_outcomes(ws: Workspace, stmt: Select[Any]) -> list[AlertRecord]:
    with ws.metadata.read() as conn:
        raised = [_event(row) for row in conn.execute(stmt)]
        outcomes = _outcomes(conn, min((e.id for e in raised), default=0))
    pending = "pending" if ws.settings.alerts.webhook_url.strip() else "no webhook"
    return [
        AlertRecord(e, outcomes[e.id].kind.removeprefix("alert."), outcomes[e.id])
        if e.id in outcomes
        else AlertRecord(e, pending)
        for e in raised
    ]


def _outcomes(conn: Connection, first_id: int) -> dict[int, Event]:
    """Outcome events after ``first_id`` by the ``alert.raised`` event they answer."""
    stmt = (
        select(events_table)
        .where(events_table.c.kind.in_(OUTCOMES), events_table.c.id > first_id)
        .order_by(events_table.c.id)
    )
    found: dict[int, Event] = {}
    for row in conn.execute(stmt):
        raised = (row.payload or {}).get("raised_event")
        if isinstance(raised, int):
            found[raised] = _event(row)
    return found


# --- alerts raised by services ---------------------------------------------------------------


def rollback_alert(move: Event) -> Alert:
    """The ``rollback_done`` alert for an ``alias.rollback`` event (``details.source_event`` is
    the event's id: one alert per rollback, whoever raises it)."""
    old, new = move.payload.get("from_version"), move.payload.get("to_version")
    return Alert(
        kind="rollback_done",
        severity="warning",
        model=move.model or "",
        version=move.version,
        title=f"{move.model}: production rolled back to v{move.version}",
        text=f"{move.actor} rolled production back"
        + (f" from v{old} to v{new}" if old and new else "")
        + (f": {move.reason}" if move.reason else "."),
        details={"source_event": move.id, "from_version": old, "actor": move.actor},
        ts=move.ts,
    )


# --- the test alert --------------------------------------------------------------------------

TEST_TITLE = "Test alert from closedloop"


def send_test(ws: Workspace, *, actor: str, wait: float = 30.0) -> AlertRecord:
    """Send a ``test`` alert through every configured channel and wait up to ``wait`` seconds
    for the webhook's outcome (``status`` stays ``pending`` when it takes longer)."""
    alert = Alert(
        kind="test",
        model="",
        title=TEST_TITLE,
        text="If you can read this, closedloop's alerts reach this channel.",
        details={"project": ws.settings.project_dir.name},
    )
    sender = AlertSender(ws)
    try:
        event_id = sender.send(alert, actor=actor)
        sender.flush(wait)
    finally:
        sender.close(timeout=0)
    return alert_record(ws, event_id)
