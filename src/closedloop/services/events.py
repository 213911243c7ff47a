"""The event log: an append-only record of every state change (who, what, when, why).

Events are written in the same transaction as the change they describe and never updated.
On PostgreSQL an event that changes what is served (an alias move or a rollout transition) also
sends ``NOTIFY closedloop_rollout`` with the model's name, delivered when the transaction commits,
so serving replicas reload at once instead of at their next poll.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select, text

from closedloop.services.workspace import Workspace
from closedloop.storage.metadata.tables import events

ROLLOUT_CHANNEL = "closedloop_rollout"
"""The PostgreSQL channel notified (payload: the model's name) when what is served may change."""


def changes_serving(kind: str) -> bool:
    """Whether an event of ``kind`` can change what a server serves (alias moves, transitions)."""
    return kind.startswith("alias.") or (
        kind.startswith("rollout.") and kind != "rollout.evaluated"
    )


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite returns naive datetimes; everything we store is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Event:
    id: int
    ts: datetime
    actor: str
    kind: str
    model: str | None
    version: int | None
    payload: dict[str, Any]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ts": self.ts.isoformat(),
            "actor": self.actor,
            "kind": self.kind,
            "model": self.model,
            "version": self.version,
            "payload": self.payload,
            "reason": self.reason,
        }


def record(
    conn: Connection,
    kind: str,
    *,
    actor: str,
    model: str | None = None,
    version: int | None = None,
    payload: dict[str, Any] | None = None,
    reason: str = "",
    ts: datetime | None = None,
) -> int:
    """Append one event inside the caller's transaction; returns its id."""
    result = conn.execute(
        events.insert().values(
            ts=ts or utcnow(),
            actor=actor,
            kind=kind,
            model=model,
            version=version,
            payload=payload or {},
            reason=reason,
        )
    )
    key = result.inserted_primary_key
    assert key is not None
    if conn.dialect.name == "postgresql" and changes_serving(kind):
        conn.execute(
            text("SELECT pg_notify(:channel, :model)"),
            {"channel": ROLLOUT_CHANNEL, "model": model or ""},
        )
    return int(key[0])


def _row_to_event(row: Any) -> Event:
    return Event(
        id=row.id,
        ts=as_utc(row.ts),
        actor=row.actor,
        kind=row.kind,
        model=row.model,
        version=row.version,
        payload=dict(row.payload or {}),
        reason=row.reason or "",
    )


def query(
    conn: Connection,
    *,
    model: str | None = None,
    kinds: tuple[str, ...] | None = None,
    limit: int | None = None,
) -> list[Event]:
    """Events in the order they happened (oldest first)."""
    stmt = select(events).order_by(events.c.id)
    if model is not None:
        stmt = stmt.where(events.c.model == model)
    if kinds:
        stmt = stmt.where(events.c.kind.in_(kinds))
    rows = [_row_to_event(r) for r in conn.execute(stmt)]
    return rows[-limit:] if limit else rows


def list_events(
    ws: Workspace,
    *,
    model: str | None = None,
    kinds: tuple[str, ...] | None = None,
    limit: int | None = None,
) -> list[Event]:
    with ws.metadata.read() as conn:
        return query(conn, model=model, kinds=kinds, limit=limit)
