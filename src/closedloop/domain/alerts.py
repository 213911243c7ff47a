"""Alerts: what the loop did or found, told to people. Pure: no I/O, no clock.

An :class:`Alert` is one message (a drift, a performance drop, a failed retrain, a rejected
candidate, an aborted canary, a rollback, or a test). This module turns it into the JSON body of a
Slack-compatible incoming webhook (:func:`slack_body`), signs a body so that a receiver can check
where it came from and that it was not altered (:func:`sign`, :func:`verify`), and gives the
delay before each retry of a failed delivery (:func:`backoff`).

Signature scheme: ``sha256=<hex HMAC-SHA256(secret, b"<timestamp>.<alert id>." + body)>``,
where the timestamp is whole Unix seconds sent in ``X-Closedloop-Timestamp`` and the alert id
is sent in ``X-Closedloop-Alert-Id``. Signing the timestamp lets a receiver refuse replays of an
old, validly signed body; signing the id stops a relay from passing one alert off as another
(receivers group and acknowledge by id). Alert ids hold only letters, digits, ``-`` and ``_``,
so the signed string splits one way only.

The body carries what a person needs to act and a pointer to the rest: details that hold
program output (:data:`EVENT_ONLY_DETAILS`, e.g. a retrain's traceback from user code) stay
in the ``alert.raised`` event and are never sent to the receiver.

Webhook targets (:func:`address_refusal`): a receiver address on a link-local network (cloud
metadata services live at 169.254.169.254) or a private one is refused unless the settings allow
it; loopback is allowed (a relay on the same machine).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import math
import random
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from closedloop.errors import InvalidInputError

ALERT_KINDS: tuple[str, ...] = (
    "drift",
    "performance_drop",
    "retrain_failed",
    "gate_rejected",
    "canary_aborted",
    "rollback_done",
    "test",
)
SEVERITIES: tuple[str, ...] = ("info", "warning", "critical")
DEFAULT_SEVERITY: dict[str, str] = {
    "drift": "warning",
    "performance_drop": "warning",
    "retrain_failed": "critical",
    "gate_rejected": "info",
    "canary_aborted": "warning",
    "rollback_done": "critical",
    "test": "info",
}
"""The severity of each kind when the caller does not choose one."""

SIGNATURE_PREFIX = "sha256="
EVENT_ONLY_DETAILS: frozenset[str] = frozenset({"traceback"})
"""Detail keys kept in the ``alert.raised`` event and never put in a webhook body."""
_ID = re.compile(r"[A-Za-z0-9_-]*")
DEFAULT_TOLERANCE_SECONDS = 300.0

# Slack's Block Kit limits (characters / items).
HEADER_LIMIT = 150
SECTION_LIMIT = 3000
FIELD_LIMIT = 2000
MAX_FIELDS = 10

_EMOJI = {"info": ":information_source:", "warning": ":warning:", "critical": ":rotating_light:"}
_KIND_LABEL = {
    "drift": "Drift",
    "performance_drop": "Performance drop",
    "retrain_failed": "Retrain failed",
    "gate_rejected": "Gate rejected",
    "canary_aborted": "Canary aborted",
    "rollback_done": "Rollback done",
    "test": "Test",
}


def _choice(name: str, value: object, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise InvalidInputError(
            f"The alert's {name!r} must be one of {', '.join(allowed)}. Got {value!r} instead."
        )
    return value


def plain(value: Any) -> Any:
    """``value`` as JSON-ready data: str keys, lists for sequences, numbers as Python numbers
    (numpy scalars through ``.item()``), datetimes in ISO 8601, anything else as text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return plain(item())
        except (TypeError, ValueError):
            pass
    return str(value)


@dataclass(frozen=True)
class Alert:
    """One alert about one model (``model`` is empty for a project-wide alert such as a test).

    ``severity`` defaults to the kind's (:data:`DEFAULT_SEVERITY`). ``ts`` is when it was
    raised (timezone-aware; a sender stamps it when left out). ``id`` identifies this alert
    (derived from its content and ``ts`` unless given); :attr:`dedup_key` is the same for every
    alert about the same condition, so receivers can group repeats.
    """

    kind: str
    model: str
    title: str
    text: str = ""
    severity: str = ""
    version: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    ts: datetime | None = None
    id: str = ""

    def __post_init__(self) -> None:
        _choice("kind", self.kind, ALERT_KINDS)
        if not self.severity:
            object.__setattr__(self, "severity", DEFAULT_SEVERITY[self.kind])
        _choice("severity", self.severity, SEVERITIES)
        if not isinstance(self.title, str) or not self.title.strip():
            raise InvalidInputError(
                f"The alert's 'title' must be a non-empty string. Got {self.title!r} instead."
            )
        if self.version is not None and (
            isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1
        ):
            raise InvalidInputError(
                f"The alert's 'version' must be a version number >= 1 or None. "
                f"Got {self.version!r} instead."
            )
        if not isinstance(self.details, dict):
            raise InvalidInputError(
                f"The alert's 'details' must be a dict. Got {self.details!r} instead."
            )
        object.__setattr__(self, "details", plain(self.details))
        if not isinstance(self.id, str) or not _ID.fullmatch(self.id):
            raise InvalidInputError(
                "The alert's 'id' must hold only letters, digits, '-' and '_'. "
                f"Got {self.id!r} instead."
            )
        if self.ts is not None:
            if not isinstance(self.ts, datetime):
                raise InvalidInputError(
                    f"The alert's 'ts' must be a datetime. Got {self.ts!r} instead."
                )
            if self.ts.tzinfo is None:
                object.__setattr__(self, "ts", self.ts.replace(tzinfo=UTC))
            if not self.id:
                object.__setattr__(self, "id", self._derived_id())

    @property
    def dedup_key(self) -> str:
        """The same for every alert of this kind, model, version and title."""
        return f"{self.kind}-{_digest(self.kind, self.model, self.version, self.title)}"

    def _derived_id(self) -> str:
        assert self.ts is not None
        return f"{self.kind}-{_digest(self.dedup_key, self.ts.isoformat(), self.text)}"

    def stamped(self, now: datetime) -> Alert:
        """This alert with ``ts = now`` (and its id) when it has no ``ts`` yet."""
        if self.ts is not None:
            return self
        return Alert(**{**self._fields(), "ts": now, "id": ""})

    def _fields(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "model": self.model,
            "title": self.title,
            "text": self.text,
            "severity": self.severity,
            "version": self.version,
            "details": self.details,
            "ts": self.ts,
            "id": self.id,
        }

    def to_dict(self) -> dict[str, Any]:
        """The alert as JSON-ready data (the payload of its ``alert.raised`` event)."""
        body = self._fields()
        body["ts"] = self.ts.isoformat() if self.ts else None
        body["dedup_key"] = self.dedup_key
        return body

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Alert:
        """The inverse of :meth:`to_dict`."""
        ts = data.get("ts")
        return cls(
            kind=data.get("kind", ""),
            model=data.get("model") or "",
            title=data.get("title", ""),
            text=data.get("text", ""),
            severity=data.get("severity", ""),
            version=data.get("version"),
            details=dict(data.get("details") or {}),
            ts=datetime.fromisoformat(ts) if isinstance(ts, str) else None,
            id=data.get("id", ""),
        )


def _digest(*parts: object) -> str:
    text = json.dumps([plain(p) for p in parts], separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


# --- the Slack-compatible body ---------------------------------------------------------------


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _escape(text: str) -> str:
    """Slack's mrkdwn control characters as entities (``&``, ``<``, ``>``)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(_show(v) for v in value) or "—"
    if isinstance(value, dict):
        return json.dumps(value, separators=(", ", ": "), sort_keys=True)
    return "—" if value is None or value == "" else str(value)


def _field(label: str, value: Any) -> dict[str, str]:
    text = f"*{_escape(label)}*\n{_escape(_show(value))}"
    return {"type": "mrkdwn", "text": _clip(text, FIELD_LIMIT)}


def _fields(alert: Alert) -> list[dict[str, str]]:
    """Kind, severity, model and version first, then the details while room remains."""
    version = f"v{alert.version}" if alert.version is not None else None
    out = [
        _field("Kind", _KIND_LABEL[alert.kind]),
        _field("Severity", alert.severity),
        _field("Model", alert.model or None),
        _field("Version", version),
    ]
    for key in sorted(set(alert.details) - EVENT_ONLY_DETAILS):
        if len(out) == MAX_FIELDS:
            break
        out.append(_field(key.replace("_", " ").capitalize(), alert.details[key]))
    return out


def _subject(alert: Alert) -> str:
    where = alert.model + (f" v{alert.version}" if alert.version is not None else "")
    return f"[{alert.severity}] {alert.title}" + (f" ({where})" if where else "")


def _pointer(alert: Alert, event_id: int | None) -> str:
    """Where the whole alert is: its event and the command that shows it."""
    command = "closedloop alerts" + (f" {alert.model}" if alert.model else "") + " --json"
    where = f"event {event_id}" if event_id is not None else "its alert.raised event"
    kept = sorted(EVENT_ONLY_DETAILS & set(alert.details))
    what = f"the {', '.join(kept)} and all details" if kept else "all details"
    return f"{what[0].upper()}{what[1:]}: {where}, `{command}`"


def slack_body(alert: Alert, *, event_id: int | None = None) -> dict[str, Any]:
    """The JSON body of a Slack incoming webhook: a plain ``text`` fallback (notifications,
    clients without blocks) and ``blocks``: a header, a section with the text and up to ten
    fields (never :data:`EVENT_ONLY_DETAILS`), and a context line with the alert id and time,
    and where the whole alert is (``event_id``: its ``alert.raised`` event)."""
    header = f"{_EMOJI[alert.severity]} {alert.title}"
    when = alert.ts.isoformat() if alert.ts else "—"
    return {
        "text": _clip(_subject(alert), SECTION_LIMIT),
        "blocks": [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": _clip(header, HEADER_LIMIT), "emoji": True},
            },
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": _clip(_escape(alert.text or alert.title), SECTION_LIMIT),
                },
                "fields": _fields(alert),
            },
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": f"closedloop · alert `{alert.id or '—'}` · {when}"},
                    {"type": "mrkdwn", "text": _escape(_pointer(alert, event_id))},
                ],
            },
        ],
    }


# --- signatures ------------------------------------------------------------------------------


def sign(secret: bytes, timestamp: str, body: bytes, *, alert_id: str) -> str:
    """``sha256=<hex HMAC-SHA256(secret, b"<timestamp>.<alert_id>." + body)>``."""
    if not _ID.fullmatch(alert_id):
        raise InvalidInputError(
            f"An alert id holds only letters, digits, '-' and '_'. Got {alert_id!r} instead."
        )
    message = f"{timestamp}.{alert_id}.".encode() + body
    return SIGNATURE_PREFIX + hmac.new(secret, message, hashlib.sha256).hexdigest()


def verify(
    secret: bytes,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    alert_id: str,
    now: float,
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
) -> bool:
    """Whether ``signature`` is :func:`sign` of this body, timestamp and alert id under
    ``secret`` and the timestamp (Unix seconds) is within ``tolerance_seconds`` of ``now``
    (Unix seconds).

    The comparison takes the same time wherever the signatures differ."""
    try:
        sent = int(timestamp)
    except (TypeError, ValueError):
        return False
    if not math.isfinite(now) or abs(now - sent) > tolerance_seconds:
        return False
    if not isinstance(alert_id, str) or not _ID.fullmatch(alert_id):
        return False
    expected = sign(secret, timestamp, body, alert_id=alert_id).encode("ascii")
    given = signature.encode("utf-8", "replace") if isinstance(signature, str) else b""
    return hmac.compare_digest(expected, given)


# --- webhook targets -------------------------------------------------------------------------

_REFUSED_NETWORKS: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = (
    (ipaddress.ip_network("169.254.0.0/16"), "a link-local address (cloud metadata answers there)"),
    (ipaddress.ip_network("fe80::/10"), "a link-local address"),
    (ipaddress.ip_network("10.0.0.0/8"), "a private address"),
    (ipaddress.ip_network("172.16.0.0/12"), "a private address"),
    (ipaddress.ip_network("192.168.0.0/16"), "a private address"),
    (ipaddress.ip_network("100.64.0.0/10"), "a shared (carrier-grade NAT) address"),
    (ipaddress.ip_network("fc00::/7"), "a private (unique local) address"),
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def address_refusal(address: str) -> str | None:
    """Why a webhook may not be sent to the IP ``address``, or None when it may: a link-local,
    private or shared network, an unspecified (``0.0.0.0``, ``::``) or multicast address. IPv4
    addresses written as IPv6 (``::ffff:a.b.c.d``, NAT64 ``64:ff9b::a.b.c.d``) are judged as
    the IPv4 address. Loopback is allowed: a relay on the same machine."""
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(
            address.split("%", 1)[0]
        )
    except ValueError:
        return f"{address!r} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip in _NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.is_loopback:
        return None
    for network, what in _REFUSED_NETWORKS:
        if ip in network:
            return f"{ip} is {what}"
    if ip.is_unspecified or ip.is_multicast:
        return f"{ip} is not a single host's address"
    return None


# --- retries ---------------------------------------------------------------------------------


def backoff(
    attempt: int,
    *,
    base: float = 1.0,
    factor: float = 2.0,
    cap: float = 60.0,
    jitter: float = 0.0,
    seed: int | None = None,
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1, 2, …) before the next one.

    ``base * factor ** (attempt - 1)``, at most ``cap``. With ``jitter`` in [0, 1] the delay is
    reduced by a random share of up to ``jitter`` (spreading retries of many senders); the
    share depends only on ``seed`` and ``attempt`` when a seed is given.
    """
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise InvalidInputError(
            f"The 'attempt' parameter must be an int >= 1. Got {attempt!r} instead."
        )
    if not 0.0 <= jitter <= 1.0:
        raise InvalidInputError(
            f"The 'jitter' parameter must be in [0, 1]. Got {jitter!r} instead."
        )
    if base < 0 or cap < 0 or factor < 1:
        raise InvalidInputError(
            f"backoff needs base >= 0, cap >= 0 and factor >= 1. "
            f"Got base={base!r}, cap={cap!r}, factor={factor!r} instead."
        )
    try:
        grown = base * factor ** (attempt - 1)
    except OverflowError:
        grown = math.inf
    delay = min(cap, grown)
    if jitter:
        rng = random.Random(None if seed is None else seed * 1_000_003 + attempt)
        delay *= 1.0 - jitter * rng.random()
    return delay


__all__ = [
    "ALERT_KINDS",
    "DEFAULT_SEVERITY",
    "EVENT_ONLY_DETAILS",
    "SEVERITIES",
    "Alert",
    "address_refusal",
    "backoff",
    "plain",
    "sign",
    "slack_body",
    "verify",
]
