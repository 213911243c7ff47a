"""The event log: an append-only record of every state change (who, what, when, why).

Events are written in the same transaction as the change they describe and never updated.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select

from closedloop.services.workspace import Workspace
from closedloop.storage.metadata.tables import events


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
