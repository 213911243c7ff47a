"""The model registry: models, versions, aliases and rollback.

Versions are numbered 1, 2, 3 … per model. A number is allocated inside the write transaction that
inserts the version, under the model row's lock (``BEGIN IMMEDIATE`` on SQLite, ``SELECT … FOR
UPDATE`` on PostgreSQL), so concurrent registrations never collide. Alias moves and their events are
one transaction. A rollback is an alias move to the last known-good version; a canary or shadow
running at that moment ends in the same transaction (``rollout.rolled_back``), and the
``rollback_done`` alert is raised as soon as the move commits.

Moving ``production`` to a version the gate rejected, or one production was rolled back from,
is refused unless forced with a reason (recorded on the event as ``forced``).

*Last known-good* version: the most recent version, other than the current production one, that was
in production before and was never rolled back from.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import EllipsisType
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, func, select
from sqlalchemy.exc import IntegrityError as SAIntegrityError

from closedloop.errors import (
    ClosedloopError,
    ConflictError,
    GateRejectedError,
    InvalidInputError,
    ModelLoadError,
    NotFoundError,
)
from closedloop.services import events
from closedloop.services.events import as_utc, utcnow
from closedloop.services.workspace import Workspace, default_actor
from closedloop.storage.metadata.tables import aliases, models, rollouts, versions
from closedloop.storage.names import check_model_name

if TYPE_CHECKING:
    import pandas as pd

    from closedloop.domain.model import LoadedVersion
    from closedloop.domain.rollout import RolloutState
    from closedloop.domain.signature import Signature
    from closedloop.services.alerts import AlertSender

PRODUCTION = "production"
ROLLOUT_ALIASES = {"canary": ("canary", "abort"), "shadow": ("shadow", "stop-shadow")}
"""The aliases a running rollout owns: alias → (rollout mode, the command that ends it)."""
REFERENCE_SAMPLE_ROWS = 100_000
ALIAS_KINDS = ("alias.set", "alias.rollback", "alias.deleted")


@dataclass(frozen=True)
class VersionInfo:
    """A registered version as stored (without its artifact)."""

    model: str
    number: int
    created_at: datetime
    artifact_sha256: str
    artifact_format: str
    signature: dict[str, Any]
    metrics: dict[str, Any]
    params: dict[str, Any]
    lineage: dict[str, Any]
    profile_sha256: str | None
    reference_sha256: str | None
    evaluation_sha256: str | None
    run_id: str | None
    description: str
    aliases: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["created_at"] = self.created_at.isoformat()
        return out


@dataclass(frozen=True)
class ModelInfo:
    name: str
    description: str
    created_at: datetime
    latest_version: int | None
    aliases: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["created_at"] = self.created_at.isoformat()
        return out


@dataclass(frozen=True)
class AliasInfo:
    """An alias as it stands, with its last move: who, when, why."""

    model: str
    alias: str
    version: int
    updated_at: datetime
    actor: str
    reason: str
    kind: str

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["updated_at"] = self.updated_at.isoformat()
        return out


def _check_name(kind: str, name: str) -> None:
    ok = name and len(name) <= 200 and all(c.isalnum() or c in "-_." for c in name)
    if not ok:
        raise InvalidInputError(
            f"The {kind} name must be 1-200 letters, digits, '-', '_' or '.'. Got {name!r} instead."
        )


def _model_id(conn: Connection, name: str, *, lock: bool = False) -> int:
    stmt = select(models.c.id).where(models.c.name == name)
    if lock and conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    model_id = conn.execute(stmt).scalar()
    if model_id is None:
        raise unknown_model(conn, name)
    return int(model_id)


def unknown_model(conn: Connection, name: str) -> NotFoundError:
    """The error for a model name that is not registered, naming the closest one if any."""
    import difflib

    known = [str(n) for n in conn.execute(select(models.c.name)).scalars()]
    close = difflib.get_close_matches(name, known, n=1)
    return NotFoundError(
        f"No model named {name!r}" + (f"; did you mean {close[0]!r}?" if close else "."),
        hint="List models with `closedloop models`."
        if known
        else "No model is registered yet: run `closedloop train`.",
    )


def lock_model(conn: Connection, name: str) -> int:
    """Inside a write transaction: the model's id, its row locked until commit (PostgreSQL;
    SQLite writers are serialised by ``BEGIN IMMEDIATE``). NotFoundError if unknown."""
    return _model_id(conn, name, lock=True)


def get_model_id(ws: Workspace, name: str) -> int:
    """The model's id (NotFoundError if there is no such model)."""
    with ws.metadata.read() as conn:
        return _model_id(conn, name)


def _ensure_model(conn: Connection, name: str) -> int:
    try:
        return _model_id(conn, name, lock=True)
    except NotFoundError:
        pass
    try:
        with conn.begin_nested():
            conn.execute(models.insert().values(name=name, description="", created_at=utcnow()))
    except SAIntegrityError:
        pass  # another writer created it first
    return _model_id(conn, name, lock=True)


def _serialise_reference(features: pd.DataFrame, seed: int) -> bytes:
    sample = features
    if len(features) > REFERENCE_SAMPLE_ROWS:
        sample = features.sample(n=REFERENCE_SAMPLE_ROWS, random_state=seed)
    buffer = io.BytesIO()
    sample.reset_index(drop=True).to_parquet(buffer, index=False)
    return buffer.getvalue()


def _serialise_evaluation(estimator: Any, X: pd.DataFrame, y: Any) -> bytes:
    """Held-out rows with ``_label``, ``_prediction`` and (binary classifiers) ``_score``."""
    from closedloop.domain.model import LoadedVersion
    from closedloop.domain.signature import infer_signature

    frame = X.reset_index(drop=True).copy()
    loaded = LoadedVersion(
        model="", version=0, sha256="", signature=infer_signature(X), estimator=estimator
    )
    prediction = loaded.predict(X)
    frame["_label"] = list(y)
    frame["_prediction"] = prediction.labels
    if prediction.scores is not None:
        frame["_score"] = prediction.scores
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def register_version(
    ws: Workspace,
    model: str,
    estimator: object,
    features: pd.DataFrame,
    *,
    metrics: dict[str, float] | None = None,
    params: dict[str, Any] | None = None,
    lineage: dict[str, Any] | None = None,
    run_id: str | None = None,
    description: str = "",
    actor: str | None = None,
    reason: str = "",
    evaluation: tuple[pd.DataFrame, Any] | None = None,
) -> VersionInfo:
    """Store the estimator, its signature, reference profile and sample, and number the version.

    ``features`` is the training frame without the target: the signature and the drift reference
    are computed from it once, here. The signature also records the target (regression, or the
    classifier's classes), which labels posted later are coerced to. ``evaluation`` is the
    held-out ``(X, y)`` the version was scored on: it is stored with the version's predictions
    on it, as the reference for prediction drift, label drift and label-free performance
    estimation.
    """
    import json

    from closedloop.domain.checks.profiles import profile_frame
    from closedloop.domain.model import ensure_model
    from closedloop.domain.signature import infer_signature, infer_target

    check_model_name(model)
    ensure_model(estimator)
    if len(features) == 0:
        raise InvalidInputError("Cannot register a version trained on an empty frame.")
    signature = infer_signature(features)
    held_out_labels = evaluation[1] if evaluation is not None else None
    signature = replace(signature, target=infer_target(estimator, held_out_labels))
    blob = pickle.dumps(estimator, protocol=pickle.HIGHEST_PROTOCOL)
    sha = ws.artifacts.put(blob)
    profile = profile_frame(features).to_dict()
    profile_sha = ws.artifacts.put(json.dumps(profile, sort_keys=True).encode())
    reference_sha = ws.artifacts.put(_serialise_reference(features, seed=0))
    evaluation_sha = None
    if evaluation is not None:
        evaluation_sha = ws.artifacts.put(_serialise_evaluation(estimator, *evaluation))
    actor = actor or default_actor()
    with ws.metadata.write() as conn:
        model_id = _ensure_model(conn, model)
        latest = conn.execute(
            select(func.max(versions.c.number)).where(versions.c.model_id == model_id)
        ).scalar()
        number = int(latest or 0) + 1
        now = utcnow()
        conn.execute(
            versions.insert().values(
                model_id=model_id,
                number=number,
                created_at=now,
                artifact_sha256=sha,
                artifact_format="pickle",
                signature=signature.to_dict(),
                metrics=metrics or {},
                params=params or {},
                lineage=lineage or {},
                profile_sha256=profile_sha,
                reference_sha256=reference_sha,
                evaluation_sha256=evaluation_sha,
                run_id=run_id,
                description=description,
            )
        )
        events.record(
            conn,
            "version.registered",
            actor=actor,
            model=model,
            version=number,
            payload={"artifact_sha256": sha, "run_id": run_id, "metrics": metrics or {}},
            reason=reason,
        )
    return get_version(ws, model, number)


def _version_from_row(model: str, row: Any, alias_names: list[str]) -> VersionInfo:
    return VersionInfo(
        model=model,
        number=row.number,
        created_at=as_utc(row.created_at),
        artifact_sha256=row.artifact_sha256,
        artifact_format=row.artifact_format,
        signature=dict(row.signature),
        metrics=dict(row.metrics),
        params=dict(row.params),
        lineage=dict(row.lineage),
        profile_sha256=row.profile_sha256,
        reference_sha256=row.reference_sha256,
        evaluation_sha256=row.evaluation_sha256,
        run_id=row.run_id,
        description=row.description or "",
        aliases=alias_names,
    )


def _aliases_of(conn: Connection, model_id: int) -> dict[str, int]:
    rows = conn.execute(
        select(aliases.c.name, aliases.c.version_number).where(aliases.c.model_id == model_id)
    )
    return {r.name: r.version_number for r in rows}


def list_models(ws: Workspace) -> list[ModelInfo]:
    with ws.metadata.read() as conn:
        latest = (
            select(versions.c.model_id, func.max(versions.c.number).label("latest"))
            .group_by(versions.c.model_id)
            .subquery()
        )
        rows = conn.execute(
            select(models, latest.c.latest)
            .select_from(models.outerjoin(latest, latest.c.model_id == models.c.id))
            .order_by(models.c.name)
        ).all()
        return [
            ModelInfo(
                name=r.name,
                description=r.description or "",
                created_at=as_utc(r.created_at),
                latest_version=r.latest,
                aliases=_aliases_of(conn, r.id),
            )
            for r in rows
        ]


def list_versions(ws: Workspace, model: str) -> list[VersionInfo]:
    with ws.metadata.read() as conn:
        model_id = _model_id(conn, model)
        by_version: dict[int, list[str]] = {}
        for name, number in _aliases_of(conn, model_id).items():
            by_version.setdefault(number, []).append(name)
        rows = conn.execute(
            select(versions).where(versions.c.model_id == model_id).order_by(versions.c.number)
        )
        return [_version_from_row(model, r, sorted(by_version.get(r.number, []))) for r in rows]


def get_version(ws: Workspace, model: str, number: int) -> VersionInfo:
    with ws.metadata.read() as conn:
        return _get_version(conn, model, number)


def _get_version(conn: Connection, model: str, number: int) -> VersionInfo:
    model_id = _model_id(conn, model)
    row = conn.execute(
        select(versions).where(versions.c.model_id == model_id, versions.c.number == number)
    ).first()
    if row is None:
        raise NotFoundError(
            f"Model {model!r} has no version {number}.",
            hint=f"List versions with `closedloop versions {model}`.",
        )
    names = sorted(n for n, v in _aliases_of(conn, model_id).items() if v == number)
    return _version_from_row(model, row, names)


def resolve_alias(ws: Workspace, model: str, alias: str = PRODUCTION) -> int | None:
    """The version an alias points to, or None when the alias is not set."""
    with ws.metadata.read() as conn:
        return _aliases_of(conn, _model_id(conn, model)).get(alias)


def _move_alias(
    conn: Connection,
    model: str,
    alias: str,
    number: int,
    *,
    kind: str,
    actor: str,
    reason: str,
    extra: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> tuple[int | None, int]:
    """Point ``alias`` at ``number``; returns the previous version and the event's id."""
    model_id = _model_id(conn, model, lock=True)
    _get_version(conn, model, number)
    previous = _aliases_of(conn, model_id).get(alias)
    now = now or utcnow()
    if previous is None:
        conn.execute(
            aliases.insert().values(
                model_id=model_id, name=alias, version_number=number, updated_at=now
            )
        )
    else:
        conn.execute(
            aliases.update()
            .where(aliases.c.model_id == model_id, aliases.c.name == alias)
            .values(version_number=number, updated_at=now)
        )
    payload = {"alias": alias, "from_version": previous, "to_version": number, **(extra or {})}
    event_id = events.record(
        conn, kind, actor=actor, model=model, version=number, payload=payload, reason=reason, ts=now
    )
    return previous, event_id


def _refusal(conn: Connection, model: str, number: int) -> ClosedloopError | None:
    """Why ``number`` must not become production without ``force`` (None when it may)."""
    gate = _get_version(conn, model, number).lineage.get("gate") or {}
    if gate and gate.get("passed") is False:
        why = gate.get("reason") or "no reason recorded"
        return GateRejectedError(
            f"{model} v{number} was rejected by the gate ({why}); "
            "pass --force --reason '…' to promote it anyway.",
            hint=f"`closedloop versions {model}` shows each version's gate decision.",
        )
    for move in events.query(conn, model=model, kinds=("alias.rollback",)):
        if move.payload.get("from_version") == number:
            why = f": {move.reason}" if move.reason else ""
            return ConflictError(
                f"{model} v{number} was rolled back from production on "
                f"{move.ts:%Y-%m-%d %H:%M} UTC by {move.actor}{why}; "
                "pass --force --reason '…' to promote it anyway.",
                hint=f"`closedloop history {model}` shows the rollback.",
            )
    return None


def set_alias(
    ws: Workspace,
    model: str,
    alias: str,
    number: int,
    *,
    actor: str | None = None,
    reason: str = "",
    expected: int | EllipsisType | None = ...,
    force: bool = False,
) -> int | None:
    """Point ``alias`` at version ``number``; returns the version it pointed to before.

    With ``expected``, the move happens only if the alias still points there (None: unset);
    otherwise ConflictError: a compare-and-set for callers that decided on an earlier view.

    ``production`` is not moved to a version the gate rejected (GateRejectedError) or one that
    production was rolled back from (ConflictError) unless ``force`` is set with a ``reason``;
    the forced move's event carries ``forced: true`` and what was overridden.
    """
    _check_name("alias", alias)
    with ws.metadata.write() as conn:
        if expected is not ...:
            current = _aliases_of(conn, _model_id(conn, model, lock=True)).get(alias)
            if current != expected:
                raise ConflictError(
                    f"{model}@{alias} moved to v{current} (expected v{expected}); not moved.",
                    hint="Look at `closedloop history` and decide again.",
                )
        extra: dict[str, Any] = {}
        refusal = _refusal(conn, model, number) if alias == PRODUCTION else None
        if refusal is not None:
            if not force:
                raise refusal
            if not reason.strip():
                raise InvalidInputError(
                    f"Forcing {model} v{number} into production needs a reason. "
                    f"Overriding: {refusal.message.partition('; pass')[0]}.",
                    hint="Add --reason '…' (recorded in the event log).",
                )
            extra = {"forced": True, "overridden": refusal.message.partition("; pass")[0]}
        previous, _ = _move_alias(
            conn,
            model,
            alias,
            number,
            kind="alias.set",
            actor=actor or default_actor(),
            reason=reason,
            extra=extra,
        )
        return previous


def list_aliases(ws: Workspace, model: str) -> list[AliasInfo]:
    """Every alias of ``model`` with its version and its last move (who, when, why)."""
    with ws.metadata.read() as conn:
        model_id = _model_id(conn, model)
        rows = conn.execute(
            select(aliases).where(aliases.c.model_id == model_id).order_by(aliases.c.name)
        ).all()
        last: dict[str, events.Event] = {}
        for move in events.query(conn, model=model, kinds=ALIAS_KINDS):
            last[str(move.payload.get("alias"))] = move
    found = []
    for row in rows:
        latest = last.get(row.name)
        found.append(
            AliasInfo(
                model=model,
                alias=row.name,
                version=int(row.version_number),
                updated_at=as_utc(row.updated_at),
                actor=latest.actor if latest else "",
                reason=latest.reason if latest else "",
                kind=latest.kind if latest else "",
            )
        )
    return found


def delete_alias(
    ws: Workspace,
    model: str,
    alias: str,
    *,
    actor: str | None = None,
    reason: str = "",
    force: bool = False,
) -> int:
    """Remove ``alias`` (recorded as ``alias.deleted``); returns the version it pointed to.

    ``production`` is what servers answer with: deleting it is refused unless ``force``. The
    ``canary`` or ``shadow`` alias of a running rollout is never deleted here: the rollout is
    ended with ``closedloop rollout abort`` / ``stop-shadow``, which removes it.
    """
    _check_name("alias", alias)
    with ws.metadata.write() as conn:
        model_id = _model_id(conn, model, lock=True)
        current = _aliases_of(conn, model_id).get(alias)
        if current is None:
            raise NotFoundError(
                f"Model {model!r} has no alias {alias!r}.",
                hint=f"List its aliases with `closedloop alias list {model}`.",
            )
        _check_deletable(conn, model_id, model, alias, current, force=force)
        now = utcnow()
        conn.execute(
            aliases.delete().where(aliases.c.model_id == model_id, aliases.c.name == alias)
        )
        payload: dict[str, Any] = {"alias": alias, "from_version": current, "to_version": None}
        if force and alias == PRODUCTION:
            payload["forced"] = True
        events.record(
            conn,
            "alias.deleted",
            actor=actor or default_actor(),
            model=model,
            version=current,
            payload=payload,
            reason=reason,
            ts=now,
        )
    return current


def _check_deletable(
    conn: Connection, model_id: int, model: str, alias: str, current: int, *, force: bool
) -> None:
    if alias == PRODUCTION and not force:
        raise ConflictError(
            f"{model}@production (v{current}) is what servers answer {model!r} with; "
            "deleting it stops serving the model.",
            hint=f"Move it with `closedloop alias set {model} production N`, or pass --force "
            "to delete it anyway.",
        )
    if alias not in ROLLOUT_ALIASES:
        return
    mode, command = ROLLOUT_ALIASES[alias]
    row = conn.execute(
        select(rollouts.c.mode, rollouts.c.candidate_version).where(rollouts.c.model_id == model_id)
    ).first()
    if row is not None and row.mode == mode and row.candidate_version == current:
        raise ConflictError(
            f"{model}@{alias} (v{current}) belongs to the running {mode} of {model!r}; "
            "deleting the alias alone would leave the rollout half-ended.",
            hint=f"End the {mode} with `closedloop rollout {command} {model}`, which removes "
            "the alias.",
        )


def alias_history(ws: Workspace, model: str, alias: str | None = None) -> list[events.Event]:
    """Every move of the model's aliases (or of one alias), oldest first."""
    with ws.metadata.read() as conn:
        _model_id(conn, model)
        moves = events.query(conn, model=model, kinds=ALIAS_KINDS)
    return [e for e in moves if alias is None or e.payload.get("alias") == alias]


def alias_at(ws: Workspace, model: str, alias: str, when: datetime) -> int | None:
    """Which version ``alias`` pointed to at ``when`` (None if it was not set yet)."""
    target = None
    for move in alias_history(ws, model, alias):
        if move.ts > when:
            break
        target = move.payload.get("to_version")
    return target


def _last_known_good(moves: list[events.Event], current: int | None) -> int | None:
    rolled_back_from = {m.payload.get("from_version") for m in moves if m.kind == "alias.rollback"}
    served = [
        m.payload["to_version"]
        for m in moves
        if m.payload.get("alias") == PRODUCTION and m.payload.get("to_version") is not None
    ]
    for number in reversed(served):
        if number != current and number not in rolled_back_from:
            return int(number)
    return None


def last_known_good(ws: Workspace, model: str) -> int | None:
    """The version a rollback would restore (None when there is none)."""
    with ws.metadata.read() as conn:
        model_id = _model_id(conn, model)
        current = _aliases_of(conn, model_id).get(PRODUCTION)
        moves = events.query(conn, model=model, kinds=ALIAS_KINDS)
    return _last_known_good(moves, current)


@dataclass(frozen=True)
class Rollback:
    """What :func:`roll_back` did: production's move, and the rollout it ended (if any)."""

    from_version: int
    to_version: int
    ended: RolloutState | None = None


def rollback(
    ws: Workspace,
    model: str,
    *,
    actor: str | None = None,
    reason: str = "",
    alerts: AlertSender | None = None,
) -> tuple[int, int]:
    """Move production to the last known-good version; returns (from_version, to_version).
    See :func:`roll_back`."""
    done = roll_back(ws, model, actor=actor, reason=reason, alerts=alerts)
    return done.from_version, done.to_version


def roll_back(
    ws: Workspace,
    model: str,
    *,
    actor: str | None = None,
    reason: str = "",
    alerts: AlertSender | None = None,
) -> Rollback:
    """Move production to the last known-good version.

    A canary or shadow running at that moment ends in the same transaction (its alias removed,
    ``rollout.rolled_back`` recorded; :attr:`Rollback.ended`). Once committed, the
    ``rollback_done`` alert is raised through ``alerts`` (a sender of its own when None); an
    alert that cannot be raised is logged and never undoes the rollback.
    """
    from closedloop.services import rollout  # rollout imports this module

    actor = actor or default_actor()
    reason = reason or "rollback to the last known-good version"
    with ws.metadata.write() as conn:
        model_id = _model_id(conn, model, lock=True)
        current = _aliases_of(conn, model_id).get(PRODUCTION)
        if current is None:
            raise ConflictError(f"Model {model!r} has no production version to roll back.")
        moves = events.query(conn, model=model, kinds=ALIAS_KINDS)
        target = _last_known_good(moves, current)
        if target is None:
            raise ConflictError(
                f"Model {model!r} has no known-good version to roll back to "
                f"(version {current} is the only one that served production).",
                hint=f"Set production explicitly: `closedloop alias set {model} production N`.",
            )
        now = utcnow()
        _, event_id = _move_alias(
            conn,
            model,
            PRODUCTION,
            target,
            kind="alias.rollback",
            actor=actor,
            reason=reason,
            now=now,
        )
        ended = rollout.end_for_rollback(
            conn,
            model_id,
            model,
            from_version=current,
            to_version=target,
            actor=actor,
            reason=reason,
            now=now,
            rollback_event=event_id,
        )
    move = events.Event(
        id=event_id,
        ts=now,
        actor=actor,
        kind="alias.rollback",
        model=model,
        version=target,
        payload={"alias": PRODUCTION, "from_version": current, "to_version": target},
        reason=reason,
    )
    _raise_rollback_alert(ws, move, alerts)
    return Rollback(current, target, ended)


def _raise_rollback_alert(ws: Workspace, move: events.Event, alerts: AlertSender | None) -> None:
    import logging

    from closedloop.services.alerts import AlertSender, rollback_alert

    try:
        sender = alerts or AlertSender(ws)
        try:
            sender.send(rollback_alert(move), actor=move.actor)
        finally:
            if alerts is None:
                sender.close(timeout=5.0)
    except ClosedloopError as exc:  # the rollback is done; a failed alert must not hide that
        logging.getLogger("closedloop.registry").warning(
            "rollback_done alert for %s could not be raised: %s", move.model, exc.message
        )


def load_version(ws: Workspace, model: str, number: int) -> LoadedVersion:
    """Fetch, verify (sha256) and deserialise a version's model for prediction."""
    from closedloop.domain.model import LoadedVersion
    from closedloop.domain.signature import Signature

    info = get_version(ws, model, number)
    blob = ws.artifacts.get(info.artifact_sha256)  # raises IntegrityError when tampered
    try:
        estimator = pickle.loads(blob)  # only from the registry's own verified store
    except Exception as exc:
        raise ModelLoadError(
            f"Version {number} of {model!r} could not be deserialised: {exc}.",
            hint="The package versions it was trained with may be missing; see its lineage.",
        ) from exc
    signature: Signature = Signature.from_dict(info.signature)
    return LoadedVersion(
        model=model,
        version=number,
        sha256=info.artifact_sha256,
        signature=signature,
        estimator=estimator,
    )


def load_reference(ws: Workspace, model: str, number: int) -> pd.DataFrame:
    """The version's stored sample of its training features (the drift reference)."""
    import pandas as pd

    info = get_version(ws, model, number)
    if info.reference_sha256 is None:
        raise NotFoundError(f"Version {number} of {model!r} has no reference data.")
    return pd.read_parquet(io.BytesIO(ws.artifacts.get(info.reference_sha256)))


def load_evaluation(ws: Workspace, model: str, number: int) -> pd.DataFrame | None:
    """The version's held-out rows with ``_label``, ``_prediction``, ``_score`` (None if absent)."""
    import pandas as pd

    info = get_version(ws, model, number)
    if info.evaluation_sha256 is None:
        return None
    return pd.read_parquet(io.BytesIO(ws.artifacts.get(info.evaluation_sha256)))
