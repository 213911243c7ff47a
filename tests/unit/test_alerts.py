"""Alerts, the pure part: the Slack-compatible body, signatures and the retry schedule."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from closedloop.domain.alerts import (
    ALERT_KINDS,
    DEFAULT_SEVERITY,
    Alert,
    address_refusal,
    backoff,
    sign,
    slack_body,
    verify,
)
from closedloop.errors import InvalidInputError

TS = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SECRET = b"s3cret"
NOW = 1_714_564_800.0


def make(kind: str = "drift", **changes: object) -> Alert:
    values: dict[str, object] = {
        "kind": kind,
        "model": "churn",
        "version": 3,
        "title": f"{kind} on churn v3",
        "text": "3 of 8 columns drifted",
        "details": {"drifted_columns": ["age", "income"], "p_value": 0.000123456},
        "ts": TS,
    }
    values.update(changes)
    return Alert(**values)  # type: ignore[arg-type]


def texts(body: dict[str, object]) -> list[str]:
    section = body["blocks"][1]  # type: ignore[index]
    return [f["text"] for f in section["fields"]]


@pytest.mark.parametrize("kind", ALERT_KINDS)
def test_every_kind_makes_a_slack_body_with_a_fallback_text_a_header_and_fields(
    kind: str,
) -> None:
    alert = make(kind)
    body = slack_body(alert)
    json.dumps(body)  # JSON-ready
    assert set(body) == {"text", "blocks"}
    assert alert.title in body["text"] and DEFAULT_SEVERITY[kind] in body["text"]
    header, section, context = body["blocks"]
    assert header["type"] == "header"
    assert header["text"]["type"] == "plain_text" and alert.title in header["text"]["text"]
    assert section["type"] == "section"
    assert section["text"] == {"type": "mrkdwn", "text": "3 of 8 columns drifted"}
    fields = texts(body)
    assert fields[:4] == [
        f"*Kind*\n{kind.replace('_', ' ').capitalize()}",
        f"*Severity*\n{DEFAULT_SEVERITY[kind]}",
        "*Model*\nchurn",
        "*Version*\nv3",
    ]
    assert "*Drifted columns*\nage, income" in fields
    assert "*P value*\n0.0001235" in fields
    assert context["type"] == "context" and alert.id in context["elements"][0]["text"]


def test_the_body_respects_slacks_limits_and_escapes_mrkdwn() -> None:
    details = {f"key_{i:02d}": "x" * 5000 for i in range(20)}
    alert = make(title="T" * 400, text="<b> & " + "y" * 5000, details=details)
    header, section, _ = slack_body(alert)["blocks"]
    assert len(header["text"]["text"]) == 150
    assert len(section["text"]["text"]) == 3000
    assert section["text"]["text"].startswith("&lt;b&gt; &amp; ")
    assert len(section["fields"]) == 10
    assert all(len(f["text"]) <= 2000 for f in section["fields"])


def test_an_alert_without_text_or_model_still_has_a_complete_body() -> None:
    alert = Alert(kind="test", model="", title="Test alert", ts=TS)
    body = slack_body(alert)
    assert body["blocks"][1]["text"]["text"] == "Test alert"
    assert "*Model*\n—" in texts(body) and "*Version*\n—" in texts(body)
    assert alert.severity == "info"


def test_ids_are_per_alert_and_dedup_keys_per_condition() -> None:
    first, again = make(), make(ts=datetime(2024, 5, 1, 13, 0, tzinfo=UTC))
    assert first.id != again.id
    assert first.dedup_key == again.dedup_key
    assert make().id == first.id  # derived from the content, not random
    assert make(version=4).dedup_key != first.dedup_key


def test_an_alert_without_ts_is_stamped_by_the_sender_clock() -> None:
    alert = make(ts=None)
    assert alert.ts is None and alert.id == ""
    stamped = alert.stamped(TS)
    assert stamped.ts == TS and stamped.id == make().id
    assert stamped.stamped(datetime(2030, 1, 1, tzinfo=UTC)) is stamped


def test_an_alert_round_trips_through_its_dict() -> None:
    alert = make(severity="critical")
    data = json.loads(json.dumps(alert.to_dict()))
    assert data["dedup_key"] == alert.dedup_key
    assert Alert.from_dict(data) == alert


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kind": "oops"}, r"'kind' must be one of drift, performance_drop, .*'oops'"),
        ({"severity": "fatal"}, r"'severity' must be one of info, warning, critical"),
        ({"title": " "}, "'title' must be a non-empty string"),
        ({"version": 0}, "'version' must be a version number >= 1"),
    ],
)
def test_a_bad_alert_names_the_field_and_what_was_expected(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        make(**changes)  # type: ignore[arg-type]


ID = "drift-0123456789abcdef"


def test_a_signed_body_verifies() -> None:
    alert = make()
    body = json.dumps(slack_body(alert)).encode()
    timestamp = str(int(NOW))
    signature = sign(SECRET, timestamp, body, alert_id=alert.id)
    assert signature.startswith("sha256=") and len(signature) == 7 + 64
    assert verify(SECRET, timestamp, body, signature, alert_id=alert.id, now=NOW + 10)


def test_the_signature_is_the_documented_hmac_of_timestamp_alert_id_and_body() -> None:
    import hashlib
    import hmac

    message = f"{int(NOW)}.{ID}.".encode() + b"{}"
    expected = "sha256=" + hmac.new(SECRET, message, hashlib.sha256).hexdigest()
    assert sign(SECRET, str(int(NOW)), b"{}", alert_id=ID) == expected


@pytest.mark.parametrize(
    ("secret", "timestamp", "alert_id", "body", "now"),
    [
        (SECRET, str(int(NOW)), ID, b'{"text": "tampered"}', NOW),
        (b"wrong", str(int(NOW)), ID, b'{"text": "original"}', NOW),
        (SECRET, str(int(NOW) + 1), ID, b'{"text": "original"}', NOW),  # timestamp swapped
        (SECRET, str(int(NOW)), "drift-other", b'{"text": "original"}', NOW),  # id swapped
        (SECRET, str(int(NOW)), "drift.x", b'{"text": "original"}', NOW),  # not an id
        (SECRET, str(int(NOW)), ID, b'{"text": "original"}', NOW + 301),  # stale
        (SECRET, str(int(NOW)), ID, b'{"text": "original"}', NOW - 301),  # from the future
    ],
)
def test_a_tampered_body_or_id_a_wrong_secret_or_a_stale_timestamp_fail(
    secret: bytes, timestamp: str, alert_id: str, body: bytes, now: float
) -> None:
    signature = sign(SECRET, str(int(NOW)), b'{"text": "original"}', alert_id=ID)
    assert verify(SECRET, str(int(NOW)), b'{"text": "original"}', signature, alert_id=ID, now=NOW)
    assert not verify(secret, timestamp, body, signature, alert_id=alert_id, now=now)


@pytest.mark.parametrize("signature", ["", "sha256=", "sha256=zz", "sha1=abc", "sha256=é"])
def test_malformed_signatures_and_timestamps_fail_without_raising(signature: str) -> None:
    assert not verify(SECRET, str(int(NOW)), b"{}", signature, alert_id=ID, now=NOW)
    good = sign(SECRET, str(int(NOW)), b"{}", alert_id=ID)
    assert not verify(SECRET, "yesterday", b"{}", good, alert_id=ID, now=NOW)


def test_the_tolerance_is_configurable() -> None:
    signature = sign(SECRET, str(int(NOW)), b"{}", alert_id=ID)
    stamp = str(int(NOW))
    assert not verify(
        SECRET, stamp, b"{}", signature, alert_id=ID, now=NOW + 60, tolerance_seconds=30
    )
    assert verify(SECRET, stamp, b"{}", signature, alert_id=ID, now=NOW + 60, tolerance_seconds=90)


def test_an_alert_id_that_would_make_the_signed_string_ambiguous_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="letters, digits"):
        make(id="drift.1")
    with pytest.raises(InvalidInputError, match="letters, digits"):
        sign(SECRET, str(int(NOW)), b"{}", alert_id="a.b")


def test_a_traceback_stays_in_the_event_and_the_body_points_to_it() -> None:
    trace = 'Traceback (most recent call last):\n  File "pipeline.py", line 9\nKeyError: secret'
    alert = make(
        "retrain_failed",
        model="loans",
        details={"error": "the trainer raised KeyError", "traceback": trace, "source_event": 4},
    )
    assert alert.details["traceback"] == trace  # the event keeps it
    body = slack_body(alert, event_id=42)
    sent = json.dumps(body)
    assert (
        "Traceback" not in sent
        and "pipeline.py" not in sent
        and "traceback"
        not in " ".join(f["text"].split("\n")[0] for f in body["blocks"][1]["fields"])
    )
    pointer = body["blocks"][2]["elements"][1]["text"]
    assert pointer == "The traceback and all details: event 42, `closedloop alerts loans --json`"
    assert "the trainer raised KeyError" in sent


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("127.0.0.1", None),
        ("::1", None),
        ("93.184.216.34", None),
        ("2606:2800:220:1::", None),
        ("169.254.169.254", "link-local"),
        ("::ffff:169.254.169.254", "link-local"),  # IPv4 written as IPv6
        ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64
        ("fe80::1%eth0", "link-local"),
        ("10.0.0.5", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.10", "private"),
        ("fd12:3456::1", "private"),
        ("100.100.100.200", "shared"),
        ("0.0.0.0", "not a single host"),
        ("not-an-ip", "not an IP address"),
    ],
)
def test_link_local_and_private_webhook_addresses_are_refused_loopback_is_not(
    address: str, refused: str | None
) -> None:
    reason = address_refusal(address)
    assert reason is None if refused is None else refused in (reason or ""), reason
    assert address_refusal("172.32.0.1") is None  # just outside 172.16/12


def test_backoff_doubles_from_the_base_and_is_capped() -> None:
    delays = [backoff(n, base=0.5, cap=10.0) for n in range(1, 9)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert backoff(10_000, base=0.5, cap=10.0) == 10.0


def test_jitter_only_shortens_and_is_deterministic_when_seeded() -> None:
    plainly = [backoff(n) for n in range(1, 6)]
    seeded = [backoff(n, jitter=0.5, seed=7) for n in range(1, 6)]
    assert seeded == [backoff(n, jitter=0.5, seed=7) for n in range(1, 6)]
    assert seeded != [backoff(n, jitter=0.5, seed=8) for n in range(1, 6)]
    assert all(p * 0.5 <= s <= p for p, s in zip(plainly, seeded, strict=True))


@pytest.mark.parametrize(
    ("attempt", "options"),
    [(0, {}), (1, {"jitter": 2.0}), (1, {"base": -1.0}), (1, {"factor": 0.5})],
)
def test_backoff_refuses_bad_parameters(attempt: int, options: dict[str, float]) -> None:
    with pytest.raises(InvalidInputError):
        backoff(attempt, **options)  # type: ignore[arg-type]
