"""Alert channels on both stores, with a real HTTP receiver on loopback.

Each receiver is a ``ThreadingHTTPServer`` on 127.0.0.1 that answers POSTs with a scripted list
of statuses (the last one repeats) and can hang until the test releases it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner

from closedloop.domain.alerts import Alert, slack_body, verify
from closedloop.errors import ConfigError, ConflictError
from closedloop.services import alerts as alert_service
from closedloop.services.alerts import AlertSender
from closedloop.services.events import Event, list_events
from closedloop.services.workspace import Workspace

SECRET = "receiver-secret"
ACTOR = "agent:test"
WAIT = 10.0  # upper bound of every wait; tests finish as soon as the condition holds


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A real webhook receiver; ``statuses`` are answered in order, the last one repeats."""

    statuses: list[int]
    hang: bool = False
    requests: list[Received] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T000/B000/token"

    def answer(self, headers: dict[str, str], body: bytes) -> int:
        self.requests.append(Received(headers, body))
        self.arrived.set()
        if self.hang:
            self.release.wait(WAIT)
        return self.statuses[min(len(self.requests), len(self.statuses)) - 1]


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status = receiver.answer(dict(self.headers.items()), body)
            try:
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            except OSError:  # the sender gave up waiting (a hanging receiver, released late)
                pass

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def receiver() -> Iterator[Callable[..., Receiver]]:
    """Start receivers on 127.0.0.1 (port 0); all are released and stopped afterwards."""
    started: list[Receiver] = []

    def start(*statuses: int, hang: bool = False) -> Receiver:
        found = Receiver(list(statuses) or [200], hang=hang)
        found.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(found))
        threading.Thread(target=found.server.serve_forever, daemon=True).start()
        started.append(found)
        return found

    yield start
    for found in started:
        found.release.set()
        assert found.server is not None
        found.server.shutdown()
        found.server.server_close()


@pytest.fixture
def sender(ws: Workspace) -> Iterator[Callable[..., AlertSender]]:
    """``sender(**alert_settings)``: an AlertSender on ``ws``'s stores with those [alerts]
    settings and a small backoff; closed (and its workspace closed) afterwards."""
    opened: list[tuple[AlertSender, Workspace]] = []

    def make(*, queue_size: int = 100, **settings: Any) -> AlertSender:
        values = {"timeout_seconds": 1.0, "retries": 2, **settings}
        changed = Workspace(replace(ws.settings, alerts=replace(ws.settings.alerts, **values)))
        made = AlertSender(changed, backoff_base=0.01, jitter=0.0, queue_size=queue_size)
        opened.append((made, changed))
        return made

    yield make
    for made, changed in opened:
        made.close(timeout=WAIT)
        changed.close()


def drift_alert(model: str = "churn", **changes: Any) -> Alert:
    values: dict[str, Any] = {
        "kind": "drift",
        "model": model,
        "version": 3,
        "title": f"Drift on {model} v3",
        "text": "2 of 8 columns drifted",
        "details": {"drifted_columns": ["age", "income"], "check_id": 7},
        **changes,
    }
    return Alert(**values)


def outcome(ws: Workspace, event_id: int) -> Event:
    """The one delivery outcome recorded for the ``alert.raised`` event ``event_id``."""
    found = [
        e
        for e in list_events(ws, kinds=alert_service.OUTCOMES)
        if e.payload["raised_event"] == event_id
    ]
    assert len(found) == 1, found
    return found[0]


def test_the_receiver_gets_the_slack_body_signed(
    ws: Workspace, receiver: Callable[..., Receiver], sender: Callable[..., AlertSender]
) -> None:
    hook = receiver(200)
    alerts = sender(webhook_url=hook.url, webhook_secret=SECRET)
    event_id = alerts.send(drift_alert(), actor=ACTOR)
    assert alerts.flush(WAIT)

    [raised] = list_events(ws, kinds=("alert.raised",))
    assert (raised.id, raised.actor, raised.model, raised.version) == (event_id, ACTOR, "churn", 3)
    alert = Alert.from_dict(raised.payload)
    assert raised.payload == alert.to_dict()

    [request] = hook.requests
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Closedloop-Alert-Id"] == alert.id
    assert json.loads(request.body) == slack_body(alert, event_id=event_id)
    timestamp, signature = (
        request.headers["X-Closedloop-Timestamp"],
        request.headers["X-Closedloop-Signature"],
    )
    now = time.time()
    assert verify(SECRET.encode(), timestamp, request.body, signature, alert_id=alert.id, now=now)
    assert not verify(b"other", timestamp, request.body, signature, alert_id=alert.id, now=now)
    # the id is signed: a relay cannot pass this body off as another alert
    assert not verify(
        SECRET.encode(), timestamp, request.body, signature, alert_id="drift-other", now=now
    )

    delivered = outcome(ws, event_id)
    assert delivered.kind == "alert.delivered"
    assert delivered.payload["attempts"] == 1 and delivered.payload["http_status"] == 200
    assert delivered.payload["alert_id"] == alert.id
    assert "token" not in json.dumps(delivered.payload)  # the URL's path is never recorded


def test_a_receiver_failing_twice_gets_three_attempts_each_signed(
    ws: Workspace, receiver: Callable[..., Receiver], sender: Callable[..., AlertSender]
) -> None:
    hook = receiver(500, 500, 200)
    alerts = sender(webhook_url=hook.url, webhook_secret=SECRET, retries=4)
    event_id = alerts.send(drift_alert(), actor=ACTOR)
    assert alerts.flush(WAIT)

    assert len(hook.requests) == 3
    for request in hook.requests:
        headers = request.headers
        assert verify(
            SECRET.encode(),
            headers["X-Closedloop-Timestamp"],
            request.body,
            headers["X-Closedloop-Signature"],
            alert_id=headers["X-Closedloop-Alert-Id"],
            now=time.time(),
        )
    delivered = outcome(ws, event_id)
    assert delivered.kind == "alert.delivered"
    assert delivered.payload["attempts"] == 3


@pytest.mark.parametrize(
    ("status", "retried"),
    [(500, True), (503, True), (429, True), (408, True), (404, False), (400, False)],
)
def test_a_receiver_that_always_fails_ends_in_alert_failed(
    ws: Workspace,
    receiver: Callable[..., Receiver],
    sender: Callable[..., AlertSender],
    status: int,
    retried: bool,
) -> None:
    hook = receiver(status)
    alerts = sender(webhook_url=hook.url, retries=2)
    event_id = alerts.send(drift_alert(), actor=ACTOR)
    assert alerts.flush(WAIT)

    attempts = 3 if retried else 1
    assert len(hook.requests) == attempts
    failed = outcome(ws, event_id)
    assert failed.kind == "alert.failed"
    assert failed.payload["attempts"] == attempts
    assert failed.payload["http_status"] == status
    assert failed.payload["error"].startswith(f"HTTP {status}")


def test_a_receiver_that_is_down_ends_in_alert_failed(
    ws: Workspace, receiver: Callable[..., Receiver], sender: Callable[..., AlertSender]
) -> None:
    hook = receiver(200)
    url = hook.url
    assert hook.server is not None
    hook.server.shutdown()
    hook.server.server_close()  # nothing listens on the port any more
    alerts = sender(webhook_url=url, retries=1)
    event_id = alerts.send(drift_alert(), actor=ACTOR)
    assert alerts.flush(WAIT)

    failed = outcome(ws, event_id)
    assert failed.kind == "alert.failed"
    assert failed.payload["attempts"] == 2
    assert failed.payload["http_status"] is None
    assert "refused" in failed.payload["error"].lower()


def test_a_hanging_receiver_does_not_block_send(
    ws: Workspace, receiver: Callable[..., Receiver], sender: Callable[..., AlertSender]
) -> None:
    hook = receiver(200, hang=True)
    alerts = sender(webhook_url=hook.url, retries=0, timeout_seconds=1.0)
    event_id = alerts.send(drift_alert(), actor=ACTOR)

    # send returned while the delivery is still unresolved: the receiver was never released
    assert not hook.release.is_set()
    assert not alerts.flush(0)
    assert hook.arrived.wait(WAIT)

    # the attempt times out while the receiver still hangs, and that is recorded
    assert alerts.flush(WAIT)
    assert not hook.release.is_set()
    failed = outcome(ws, event_id)
    assert failed.kind == "alert.failed"
    assert failed.payload["attempts"] == 1
    assert "timed out" in failed.payload["error"]
    hook.release.set()


def test_without_a_secret_no_signature_is_sent(
    receiver: Callable[..., Receiver], sender: Callable[..., AlertSender]
) -> None:
    hook = receiver(204)
    alerts = sender(webhook_url=hook.url)
    alerts.send(drift_alert(), actor=ACTOR)
    assert alerts.flush(WAIT)

    [request] = hook.requests
    assert "X-Closedloop-Signature" not in request.headers
    assert request.headers["X-Closedloop-Timestamp"].isdigit()
    assert request.headers["X-Closedloop-Alert-Id"].startswith("drift-")


def test_the_log_file_and_the_logger_get_every_alert(
    ws: Workspace,
    sender: Callable[..., AlertSender],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    log_file = tmp_path / "logs" / "alerts.jsonl"
    alerts = sender(log_file=str(log_file))
    caplog.set_level(logging.INFO, logger="closedloop.alerts")
    first = alerts.send(drift_alert(), actor=ACTOR)
    second = alerts.send(
        Alert(kind="retrain_failed", model="fraud", title="Retrain of fraud failed"), actor=ACTOR
    )

    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert [(line["event_id"], line["kind"]) for line in lines] == [
        (first, "drift"),
        (second, "retrain_failed"),
    ]
    raised = list_events(ws, kinds=("alert.raised",))
    assert [line["id"] for line in lines] == [e.payload["id"] for e in raised]
    records = [r for r in caplog.records if r.name == "closedloop.alerts"]
    assert [(r.levelname, r.getMessage()) for r in records] == [
        ("WARNING", "drift alert on churn v3: Drift on churn v3 — 2 of 8 columns drifted"),
        ("CRITICAL", "retrain_failed alert on fraud: Retrain of fraud failed"),
    ]
    assert list_events(ws, kinds=alert_service.OUTCOMES) == []  # no webhook, no delivery


def test_a_full_queue_drops_and_records_instead_of_blocking(
    ws: Workspace, receiver: Callable[..., Receiver], sender: Callable[..., AlertSender]
) -> None:
    hook = receiver(200, hang=True)
    alerts = sender(webhook_url=hook.url, retries=0, queue_size=1)
    kept = alerts.send(drift_alert(), actor=ACTOR)
    assert hook.arrived.wait(WAIT)
    dropped = [alerts.send(drift_alert(m), actor=ACTOR) for m in ("fraud", "credit")]

    assert alerts.dropped == 2
    hook.release.set()
    assert alerts.flush(WAIT)
    assert outcome(ws, kept).kind != "alert.dropped"  # the one in flight was attempted
    for count, event_id in enumerate(dropped, start=1):
        event = outcome(ws, event_id)
        assert event.kind == "alert.dropped"
        assert event.payload["dropped_total"] == count


def test_close_gives_up_on_what_it_cannot_deliver_in_time(
    ws: Workspace, receiver: Callable[..., Receiver], sender: Callable[..., AlertSender]
) -> None:
    hook = receiver(200, hang=True)
    alerts = sender(webhook_url=hook.url, retries=0)
    in_flight = alerts.send(drift_alert(), actor=ACTOR)
    assert hook.arrived.wait(WAIT)
    waiting = [alerts.send(drift_alert(m), actor=ACTOR) for m in ("fraud", "credit")]

    alerts.close(timeout=0.1)
    for event_id in waiting:
        event = outcome(ws, event_id)
        assert event.kind == "alert.failed"
        assert event.payload["attempts"] == 0
        assert "closed" in event.payload["error"]
    with pytest.raises(ConflictError, match="closed"):
        alerts.send(drift_alert(), actor=ACTOR)

    hook.release.set()  # the attempt already under way still ends and is recorded
    assert alerts.flush(WAIT)
    assert outcome(ws, in_flight).payload["attempts"] == 1


@pytest.mark.parametrize("url", ["ftp://example.org/hook", "http://", "hooks.example.org/x"])
def test_a_bad_webhook_url_is_a_config_error_naming_the_setting(
    sender: Callable[..., AlertSender], url: str
) -> None:
    with pytest.raises(ConfigError, match=r"alerts\.webhook_url must be an http:// or https://"):
        sender(webhook_url=url)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
        ("http://[fe80::1]:8080/hook", "fe80::1 is a link-local address"),
        ("http://10.0.0.5:8080/hook", "10.0.0.5 is a private address"),
        ("https://172.20.1.1/hook", "172.20.1.1 is a private address"),
        ("http://192.168.1.10/hook", "192.168.1.10 is a private address"),
        ("http://[fd00::5]/hook", "fd00::5 is a private (unique local) address"),
        ("http://[::ffff:169.254.169.254]/", "169.254.169.254 is a link-local address"),
    ],
)
def test_a_webhook_on_a_link_local_or_private_address_is_refused_unless_allowed(
    sender: Callable[..., AlertSender], url: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as info:
        sender(webhook_url=url)
    assert info.value.message.startswith(
        "The setting alerts.webhook_url must not point at a link-local or private address: "
        + reason
    ), info.value.message
    assert "alerts.allow_private_targets" in (info.value.hint or "")
    assert sender(webhook_url=url, allow_private_targets=True).webhook is not None
    assert sender(webhook_url=url, allowed_hosts=(urlsplit(url).hostname,)).webhook is not None


def test_a_host_name_is_resolved_and_every_address_checked(ws: Workspace) -> None:
    settings = replace(
        ws.settings, alerts=replace(ws.settings.alerts, webhook_url="https://hooks.corp.test/x")
    )
    changed = Workspace(settings)
    try:
        with pytest.raises(ConfigError, match=r"10\.1\.2\.3 is a private address \(hooks\.corp"):
            AlertSender(changed, resolver=lambda host, port: ["203.0.113.9", "10.1.2.3"])
        AlertSender(changed, resolver=lambda host, port: ["203.0.113.9"]).close()
    finally:
        changed.close()


def test_a_name_that_resolves_elsewhere_at_send_time_is_refused_and_recorded(
    ws: Workspace, receiver: Callable[..., Receiver]
) -> None:
    """DNS rebinding: the name resolves to the loopback receiver while the settings are
    checked, to the cloud metadata address when the alert goes out. The connection checks
    the addresses it is about to use: nothing is sent, the refusal is not retried and is
    recorded with its reason. The same name resolving to loopback is delivered."""
    hook = receiver(200)
    port = hook.url.split(":")[2].split("/")[0]
    answers = {"hooks.example.test": ["127.0.0.1"]}

    def resolver(host: str, _port: int) -> list[str]:
        return answers[host]

    settings = replace(
        ws.settings,
        alerts=replace(
            ws.settings.alerts,
            webhook_url=f"http://hooks.example.test:{port}/hooks/T000",
            retries=3,
            timeout_seconds=2.0,
        ),
    )
    changed = Workspace(settings)
    alerts = AlertSender(changed, backoff_base=0.01, jitter=0.0, resolver=resolver)
    try:
        delivered = alerts.send(drift_alert(), actor=ACTOR)
        assert alerts.flush(WAIT)
        assert outcome(ws, delivered).kind == "alert.delivered"
        assert len(hook.requests) == 1

        answers["hooks.example.test"] = ["169.254.169.254"]
        refused = alerts.send(drift_alert(title="Drift again"), actor=ACTOR)
        assert alerts.flush(WAIT)
        failed = outcome(ws, refused)
        assert failed.kind == "alert.failed"
        assert failed.payload["attempts"] == 1  # a refusal is final
        assert failed.payload["error"] == (
            "refused: 169.254.169.254 is a link-local address (cloud metadata answers there) "
            "(hooks.example.test resolves to it)"
        )
        assert failed.reason == failed.payload["error"]
        assert len(hook.requests) == 1
    finally:
        alerts.close(timeout=WAIT)
        changed.close()


def test_a_retrain_traceback_stays_in_the_event_and_the_body_points_to_it(
    ws: Workspace, receiver: Callable[..., Receiver], sender: Callable[..., AlertSender]
) -> None:
    hook = receiver(200)
    alerts = sender(webhook_url=hook.url, webhook_secret=SECRET)
    trace = 'Traceback (most recent call last):\n  File "/srv/pipeline.py", line 9, in train\n'
    alert = Alert(
        kind="retrain_failed",
        model="loans",
        title="loans: retraining failed",
        text="Retrain request 12 (drift) failed: the trainer raised KeyError. Production was "
        "not changed.",
        details={"source_event": 12, "error": "the trainer raised KeyError", "traceback": trace},
    )
    event_id = alerts.send(alert, actor=ACTOR)
    assert alerts.flush(WAIT)

    [request] = hook.requests
    sent = request.body.decode()
    assert "Traceback" not in sent and "/srv/pipeline.py" not in sent
    assert "the trainer raised KeyError" in sent
    assert f"event {event_id}, `closedloop alerts loans --json`" in sent
    [raised] = [e for e in list_events(ws, kinds=("alert.raised",)) if e.id == event_id]
    assert raised.payload["details"]["traceback"] == trace


def test_alerts_without_ts_get_the_senders_clock(ws: Workspace) -> None:
    at = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    with AlertSender(ws, clock=lambda: at) as alerts:
        event_id = alerts.send(drift_alert(), actor=ACTOR)
    [raised] = list_events(ws, kinds=("alert.raised",))
    assert raised.id == event_id
    assert raised.ts == at and raised.payload["ts"] == at.isoformat()


# --- the CLI ---------------------------------------------------------------------------------


def project(ws: Workspace, folder: Path, **alerts: Any) -> Path:
    """A project folder whose closedloop.toml points at ``ws``'s stores."""
    folder.mkdir()
    lines = [
        "[store]",
        f"metadata_url = {json.dumps(ws.settings.store.metadata_url)}",
        f"artifacts_url = {json.dumps(ws.settings.store.artifacts_url)}",
        "[alerts]",
        *(f"{key} = {json.dumps(value)}" for key, value in alerts.items()),
    ]
    (folder / "closedloop.toml").write_text("\n".join(lines) + "\n")
    return folder


def run(folder: Path, *args: str) -> Any:
    from closedloop.cli.main import cli

    return CliRunner().invoke(cli, ["--project", str(folder), "alerts", *args])


@pytest.fixture(autouse=True)
def _no_closedloop_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in [k for k in os.environ if k.startswith("CLOSEDLOOP_")]:
        monkeypatch.delenv(key)


def test_cli_lists_recent_alerts_with_their_delivery(
    ws: Workspace,
    receiver: Callable[..., Receiver],
    sender: Callable[..., AlertSender],
    tmp_path: Path,
) -> None:
    hook = receiver(200, 500)
    alerts = sender(webhook_url=hook.url, retries=0)
    delivered = alerts.send(drift_alert("churn"), actor=ACTOR)
    assert alerts.flush(WAIT)
    failed = alerts.send(drift_alert("fraud"), actor=ACTOR)
    assert alerts.flush(WAIT)
    folder = project(ws, tmp_path / "project", webhook_url=hook.url)

    result = run(folder, "--json")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert [(a["event_id"], a["delivery"]["status"]) for a in listed] == [
        (failed, "failed"),
        (delivered, "delivered"),
    ]
    assert listed[0]["delivery"]["error"].startswith("HTTP 500")
    assert listed[1]["alert"]["title"] == "Drift on churn v3"

    only = json.loads(run(folder, "churn", "--json").stdout)
    assert [a["event_id"] for a in only] == [delivered]
    assert [a["event_id"] for a in json.loads(run(folder, "--limit", "1", "--json").stdout)] == [
        failed
    ]

    text = run(folder, "churn")
    assert text.exit_code == 0, text.output
    assert "Drift on churn v3" in text.output and "delivered (1 attempt, HTTP 200)" in text.output
    assert "fraud" not in text.output


def test_cli_test_alert_reports_the_webhook_outcome(
    ws: Workspace, receiver: Callable[..., Receiver], tmp_path: Path
) -> None:
    good = receiver(200)
    folder = project(ws, tmp_path / "good", webhook_url=good.url, webhook_secret=SECRET)
    result = run(folder, "test", "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["alert"]["kind"] == "test"
    assert body["delivery"]["status"] == "delivered"
    [request] = good.requests
    assert json.loads(request.body)["blocks"][0]["text"]["text"].endswith(alert_service.TEST_TITLE)
    assert verify(
        SECRET.encode(),
        request.headers["X-Closedloop-Timestamp"],
        request.body,
        request.headers["X-Closedloop-Signature"],
        alert_id=request.headers["X-Closedloop-Alert-Id"],
        now=time.time(),
    )

    bad = receiver(500)
    folder = project(ws, tmp_path / "bad", webhook_url=bad.url, retries=0)
    result = run(folder, "test")
    assert result.exit_code == 2, result.output
    assert "FAILED after 1 attempt: HTTP 500" in result.output


def test_cli_test_alert_without_a_webhook_goes_to_the_log_only(
    ws: Workspace, tmp_path: Path
) -> None:
    log_file = tmp_path / "alerts.jsonl"
    folder = project(ws, tmp_path / "project", log_file=str(log_file))
    result = run(folder, "test", "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["delivery"]["status"] == "no webhook"
    [line] = [json.loads(x) for x in log_file.read_text().splitlines()]
    assert line["event_id"] == body["event_id"] and line["kind"] == "test"


def test_cli_refuses_a_bad_webhook_url_with_one_line(ws: Workspace, tmp_path: Path) -> None:
    folder = project(ws, tmp_path / "project", webhook_url="slack.example.org/hook")
    result = run(folder, "test")
    assert result.exit_code == 2
    assert "alerts.webhook_url must be an http:// or https:// URL" in result.output

    metadata = "http://169.254.169.254/latest/meta-data/"
    folder = project(ws, tmp_path / "metadata", webhook_url=metadata)
    result = run(folder, "test")
    assert result.exit_code == 2
    assert "error: The setting alerts.webhook_url must not point at a link-local" in result.output
    assert "hint: Set alerts.allow_private_targets = true" in result.output
