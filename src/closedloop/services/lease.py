"""Exactly one active agent: a named lease in the metadata store.

A lease row (``leases``: name, holder, fencing token, expiry) says who is active. Taking it is
one write transaction that reads the row and replaces it only if it is free, expired, or already
ours; each new holder gets a higher ``token``, so a step can check that the lease it started
under is still the current one (:meth:`LeaseHolder.renew` returns False once another holder has
it). The active holder renews it every pass and from a heartbeat while a long step runs.

On PostgreSQL the lease is also a session advisory lock held on a dedicated connection: while
the active agent's process lives, nobody else can take the lease even if a step outlasts its
expiry; when the process dies, PostgreSQL drops the lock with the connection and the next agent
takes over at once, without waiting for the expiry. On SQLite the expiry alone decides: a dead
agent's lease is taken over once ``lease_seconds`` have passed.

Time comes from an injected clock, so takeover is testable without waiting.
"""

from __future__ import annotations

import os
import socket
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select, text

from closedloop.errors import InvalidInputError
from closedloop.services import events
from closedloop.services.events import as_utc, utcnow
from closedloop.services.workspace import Workspace
from closedloop.storage.metadata.tables import leases


@dataclass(frozen=True)
class Lease:
    """A lease row as stored."""

    name: str
    holder: str
    token: int
    acquired_at: datetime
    renewed_at: datetime
    expires_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "holder": self.holder,
            "token": self.token,
            "acquired_at": self.acquired_at.isoformat(),
            "renewed_at": self.renewed_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
        }


def default_holder() -> str:
    """``host:pid:random`` — unique per process and per holder object."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _row(conn: Connection, name: str, *, lock: bool = False) -> Lease | None:
    stmt = select(leases).where(leases.c.name == name)
    if lock and conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).first()
    if row is None:
        return None
    return Lease(
        name=row.name,
        holder=row.holder,
        token=int(row.token),
        acquired_at=as_utc(row.acquired_at),
        renewed_at=as_utc(row.renewed_at),
        expires_at=as_utc(row.expires_at),
    )


def current(ws: Workspace, name: str = "agent") -> Lease | None:
    """The lease row (possibly expired), or None if nobody ever held it."""
    with ws.metadata.read() as conn:
        return _row(conn, name)


class LeaseHolder:
    """One process's claim on the lease ``name``: acquire, renew, release."""

    def __init__(
        self,
        ws: Workspace,
        *,
        name: str = "agent",
        holder: str | None = None,
        ttl: timedelta,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        if ttl <= timedelta(0):
            raise InvalidInputError(f"The lease time must be positive. Got {ttl} instead.")
        self.ws = ws
        self.name = name
        self.holder = holder or default_holder()
        self.ttl = ttl
        self.clock = clock
        self.token: int | None = None
        self._session: Connection | None = None  # PostgreSQL: holds the advisory lock

    @property
    def held(self) -> bool:
        return self.token is not None

    def _now(self) -> datetime:
        return as_utc(self.clock()).astimezone(UTC)

    def _advisory_key(self) -> int:
        return zlib.crc32(f"closedloop.lease.{self.name}".encode()) & 0x7FFFFFFF

    def _take_advisory_lock(self) -> bool:
        """PostgreSQL only: hold a session advisory lock for as long as this process lives."""
        if self._session is not None:
            return True
        conn = self.ws.metadata.engine.connect()
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        got = bool(
            conn.execute(
                text("SELECT pg_try_advisory_lock(:k)"), {"k": self._advisory_key()}
            ).scalar()
        )
        if not got:
            conn.close()
            return False
        self._session = conn
        return True

    def _drop_advisory_lock(self) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        try:
            session.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self._advisory_key()})
        except Exception:  # the connection is gone: PostgreSQL has released the lock already
            session.invalidate()
        finally:
            session.close()

    def acquire(self) -> bool:
        """Take the lease if it is free, expired, ours — or, on PostgreSQL, its holder is dead."""
        postgres = self.ws.metadata.dialect == "postgresql"
        if postgres and not self._take_advisory_lock():
            return False
        now = self._now()
        with self.ws.metadata.write() as conn:
            lease = _row(conn, self.name, lock=True)
            ours = lease is not None and lease.holder == self.holder and lease.token == self.token
            free = lease is None or lease.expires_at <= now or postgres
            if not (ours or free):
                return False
            token = lease.token if ours and lease is not None else (lease.token + 1 if lease else 1)
            values = {
                "holder": self.holder,
                "token": token,
                "renewed_at": now,
                "expires_at": now + self.ttl,
            }
            if lease is None:
                conn.execute(leases.insert().values(name=self.name, acquired_at=now, **values))
            elif ours:
                conn.execute(leases.update().where(leases.c.name == self.name).values(**values))
            else:
                conn.execute(
                    leases.update()
                    .where(leases.c.name == self.name)
                    .values(acquired_at=now, **values)
                )
            if not ours:
                events.record(
                    conn,
                    "agent.lease_acquired",
                    actor=self.holder,
                    payload={
                        "lease": self.name,
                        "token": token,
                        "previous_holder": lease.holder if lease else None,
                        "previous_expired": bool(lease and lease.expires_at <= now),
                    },
                    reason="took over the lease" if lease else "first holder",
                    ts=now,
                )
        self.token = token
        return True

    def renew(self) -> bool:
        """Extend the lease; False (and no longer held) when another holder has taken it."""
        if self.token is None:
            return False
        now = self._now()
        with self.ws.metadata.write() as conn:
            lease = _row(conn, self.name, lock=True)
            if lease is None or lease.holder != self.holder or lease.token != self.token:
                self.token = None
                lost = True
            else:
                conn.execute(
                    leases.update()
                    .where(leases.c.name == self.name)
                    .values(renewed_at=now, expires_at=now + self.ttl)
                )
                lost = False
        if lost:
            self._drop_advisory_lock()
            return False
        return True

    def release(self) -> None:
        """Give the lease up now (a clean shutdown): the next agent need not wait for expiry."""
        if self.token is not None:
            now = self._now()
            with self.ws.metadata.write() as conn:
                lease = _row(conn, self.name, lock=True)
                if lease is not None and lease.holder == self.holder and lease.token == self.token:
                    conn.execute(
                        leases.update().where(leases.c.name == self.name).values(expires_at=now)
                    )
                    events.record(
                        conn,
                        "agent.lease_released",
                        actor=self.holder,
                        payload={"lease": self.name, "token": self.token},
                        reason="agent stopped",
                        ts=now,
                    )
            self.token = None
        self._drop_advisory_lock()


__all__ = ["Lease", "LeaseHolder", "current", "default_holder"]
