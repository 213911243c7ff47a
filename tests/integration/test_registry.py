"""The registry on SQLite and PostgreSQL: versions, aliases with history, rollback."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from tests.support import features, fit_model, loans

from closedloop.errors import ConflictError, GateRejectedError, InvalidInputError, NotFoundError
from closedloop.services import events, registry
from closedloop.services.workspace import Workspace


@pytest.fixture
def frame():  # type: ignore[no-untyped-def]
    return loans(400)


@pytest.fixture
def model(frame):  # type: ignore[no-untyped-def]
    return fit_model(frame)


def test_versions_are_numbered_per_model_from_one(ws: Workspace, frame, model) -> None:
    X = features(frame)
    numbers = [registry.register_version(ws, "churn", model, X).number for _ in range(3)]
    other = registry.register_version(ws, "fraud", model, X).number
    assert numbers == [1, 2, 3]
    assert other == 1
    assert [m.name for m in registry.list_models(ws)] == ["churn", "fraud"]
    assert registry.list_models(ws)[0].latest_version == 3


def test_a_version_carries_signature_metrics_lineage_and_reference(ws: Workspace, frame, model):
    X = features(frame)
    info = registry.register_version(
        ws,
        "churn",
        model,
        X,
        metrics={"roc_auc": 0.8},
        params={"C": 1.0},
        lineage={"dataset": {"sha256": "abc"}},
        run_id="r1",
    )
    assert info.metrics == {"roc_auc": 0.8}
    assert info.params == {"C": 1.0}
    assert info.lineage["dataset"]["sha256"] == "abc"
    assert [c["name"] for c in info.signature["columns"]] == list(X.columns)
    reference = registry.load_reference(ws, "churn", info.number)
    assert list(reference.columns) == list(X.columns)
    assert len(reference) == len(X)
    loaded = registry.load_version(ws, "churn", info.number)
    assert loaded.signature.names() == list(X.columns)
    assert (loaded.predict(X).labels == model.predict(X)).all()


def test_every_alias_move_is_recorded_with_actor_and_reason(ws: Workspace, frame, model):
    X = features(frame)
    for _ in range(2):
        registry.register_version(ws, "churn", model, X)
    registry.set_alias(ws, "churn", "production", 1, actor="alice", reason="first deploy")
    registry.set_alias(ws, "churn", "production", 2, actor="bob", reason="better")
    moves = registry.alias_history(ws, "churn", "production")
    assert [(m.payload["from_version"], m.payload["to_version"]) for m in moves] == [
        (None, 1),
        (1, 2),
    ]
    assert [m.actor for m in moves] == ["alice", "bob"]
    assert [m.reason for m in moves] == ["first deploy", "better"]
    assert registry.resolve_alias(ws, "churn", "production") == 2
    assert registry.list_versions(ws, "churn")[1].aliases == ["production"]


def test_alias_at_answers_what_was_in_production_at_a_past_time(ws: Workspace, frame, model):
    X = features(frame)
    for _ in range(2):
        registry.register_version(ws, "churn", model, X)
    before_any = datetime.now(UTC)
    time.sleep(0.01)
    registry.set_alias(ws, "churn", "production", 1)
    time.sleep(0.01)
    between = datetime.now(UTC)
    time.sleep(0.01)
    registry.set_alias(ws, "churn", "production", 2)
    assert registry.alias_at(ws, "churn", "production", before_any) is None
    assert registry.alias_at(ws, "churn", "production", between) == 1
    assert registry.alias_at(ws, "churn", "production", datetime.now(UTC)) == 2


def test_rollback_restores_the_last_known_good_version(ws: Workspace, frame, model):
    X = features(frame)
    for _ in range(3):
        registry.register_version(ws, "churn", model, X)
    registry.set_alias(ws, "churn", "production", 1)
    registry.set_alias(ws, "churn", "production", 2)
    registry.set_alias(ws, "churn", "production", 3)
    assert registry.last_known_good(ws, "churn") == 2
    assert registry.rollback(ws, "churn", actor="oncall", reason="bad") == (3, 2)
    assert registry.resolve_alias(ws, "churn") == 2
    # v3 was rolled back from, so it is never "known good"; the next rollback skips it.
    assert registry.rollback(ws, "churn") == (2, 1)
    with pytest.raises(ConflictError, match="no known-good version"):
        registry.rollback(ws, "churn")
    last = registry.alias_history(ws, "churn")[-1]
    assert last.kind == "alias.rollback"
    assert last.payload == {"alias": "production", "from_version": 2, "to_version": 1}


def test_rollback_of_a_version_that_was_rolled_back_from_before_skips_it(ws, frame, model):
    X = features(frame)
    for _ in range(3):
        registry.register_version(ws, "churn", model, X)
    registry.set_alias(ws, "churn", "production", 1)
    registry.set_alias(ws, "churn", "production", 2)
    registry.rollback(ws, "churn")  # 2 -> 1; v2 is now known-bad
    registry.set_alias(ws, "churn", "production", 3)
    assert registry.rollback(ws, "churn") == (3, 1)


def test_rollback_without_history_is_a_clear_conflict(ws: Workspace, frame, model):
    registry.register_version(ws, "churn", model, features(frame))
    with pytest.raises(ConflictError, match="no production version"):
        registry.rollback(ws, "churn")
    registry.set_alias(ws, "churn", "production", 1)
    with pytest.raises(ConflictError, match="only one that served production") as caught:
        registry.rollback(ws, "churn")
    assert caught.value.hint is not None
    assert "closedloop alias set churn production" in caught.value.hint


def test_unknown_model_version_and_bad_names_are_clear_errors(ws: Workspace, frame, model):
    with pytest.raises(NotFoundError, match="No model named 'nope'"):
        registry.list_versions(ws, "nope")
    registry.register_version(ws, "churn", model, features(frame))
    with pytest.raises(NotFoundError, match="has no version 9"):
        registry.set_alias(ws, "churn", "production", 9)
    with pytest.raises(InvalidInputError, match="model name"):
        registry.register_version(ws, "bad name!", model, features(frame))
    with pytest.raises(InvalidInputError, match="fit"):
        registry.register_version(ws, "churn", object(), features(frame))


def test_registration_is_an_event(ws: Workspace, frame, model):
    registry.register_version(ws, "churn", model, features(frame), actor="ci", reason="nightly")
    [event] = events.list_events(ws, model="churn")
    assert (event.kind, event.version, event.actor, event.reason) == (
        "version.registered",
        1,
        "ci",
        "nightly",
    )


def test_an_expected_alias_target_makes_the_move_a_compare_and_set(ws: Workspace, frame, model):
    X = features(frame)
    for _ in range(3):
        registry.register_version(ws, "churn", model, X)
    registry.set_alias(ws, "churn", "production", 1, expected=None)
    registry.set_alias(ws, "churn", "production", 2, expected=1)
    with pytest.raises(ConflictError, match="moved to v2"):
        registry.set_alias(ws, "churn", "production", 3, expected=1)
    assert registry.resolve_alias(ws, "churn") == 2
    assert len(registry.alias_history(ws, "churn")) == 2


def test_the_held_out_evaluation_is_stored_with_the_version_predictions(ws: Workspace, frame):
    model = fit_model(frame)
    X = features(frame)
    info = registry.register_version(
        ws, "churn", model, X, evaluation=(X.head(50), frame["default"].head(50))
    )
    stored = registry.load_evaluation(ws, "churn", info.number)
    assert stored is not None
    assert list(stored["_label"]) == list(frame["default"].head(50))
    assert list(stored["_prediction"]) == list(model.predict(X.head(50)))
    assert stored["_score"].tolist() == pytest.approx(model.predict_proba(X.head(50))[:, 1])
    bare = registry.register_version(ws, "churn", model, X)
    assert registry.load_evaluation(ws, "churn", bare.number) is None


def _rejected(ws: Workspace, frame, model) -> None:  # type: ignore[no-untyped-def]
    """v1 in production; v2 rejected by the gate (as the pipeline records it); v3 plain."""
    X = features(frame)
    registry.register_version(ws, "churn", model, X)
    gate = {"passed": False, "reason": "candidate roc_auc 0.70 is worse than incumbent 0.80"}
    registry.register_version(ws, "churn", model, X, lineage={"gate": gate})
    registry.register_version(ws, "churn", model, X)
    registry.set_alias(ws, "churn", "production", 1)


def test_production_refuses_a_gate_rejected_version_unless_forced_with_a_reason(
    ws: Workspace, frame, model
) -> None:
    _rejected(ws, frame, model)
    with pytest.raises(GateRejectedError) as caught:
        registry.set_alias(ws, "churn", "production", 2)
    assert caught.value.message == (
        "churn v2 was rejected by the gate (candidate roc_auc 0.70 is worse than incumbent "
        "0.80); pass --force --reason '…' to promote it anyway."
    )
    with pytest.raises(InvalidInputError, match="needs a reason"):
        registry.set_alias(ws, "churn", "production", 2, force=True)
    assert registry.resolve_alias(ws, "churn") == 1
    registry.set_alias(ws, "churn", "staging", 2)  # only production is guarded

    registry.set_alias(ws, "churn", "production", 2, actor="ann", reason="hotfix", force=True)
    move = registry.alias_history(ws, "churn", "production")[-1]
    assert (move.actor, move.reason, move.payload["forced"]) == ("ann", "hotfix", True)
    assert move.payload["overridden"].startswith("churn v2 was rejected by the gate")
    # --force on a version nothing guards records nothing special
    registry.set_alias(ws, "churn", "production", 3, force=True)
    assert "forced" not in registry.alias_history(ws, "churn", "production")[-1].payload


def test_production_refuses_a_version_it_was_rolled_back_from(ws: Workspace, frame, model):
    _rejected(ws, frame, model)
    registry.set_alias(ws, "churn", "production", 3)
    registry.rollback(ws, "churn", actor="oncall", reason="errors")
    with pytest.raises(ConflictError, match=r"churn v3 was rolled back from production .* errors"):
        registry.set_alias(ws, "churn", "production", 3)


def test_the_rollback_raises_its_alert_before_returning(ws: Workspace, frame, model):
    _rejected(ws, frame, model)
    registry.set_alias(ws, "churn", "production", 3)
    registry.rollback(ws, "churn", actor="oncall", reason="errors")
    move = registry.alias_history(ws, "churn")[-1]
    (raised,) = events.list_events(ws, model="churn", kinds=("alert.raised",))
    assert raised.payload["kind"] == "rollback_done"
    assert raised.payload["details"]["source_event"] == move.id
    assert raised.actor == "oncall"


def test_list_and_delete_aliases(ws: Workspace, frame, model):
    _rejected(ws, frame, model)
    registry.set_alias(ws, "churn", "staging", 3, actor="bob", reason="try")
    listed = registry.list_aliases(ws, "churn")
    assert [(a.alias, a.version, a.actor, a.reason, a.kind) for a in listed] == [
        ("production", 1, listed[0].actor, "", "alias.set"),
        ("staging", 3, "bob", "try", "alias.set"),
    ]
    assert registry.delete_alias(ws, "churn", "staging", actor="bob", reason="done") == 3
    assert [a.alias for a in registry.list_aliases(ws, "churn")] == ["production"]
    deleted = registry.alias_history(ws, "churn", "staging")[-1]
    assert (deleted.kind, deleted.reason, deleted.payload["to_version"]) == (
        "alias.deleted",
        "done",
        None,
    )
    with pytest.raises(NotFoundError, match="no alias 'staging'"):
        registry.delete_alias(ws, "churn", "staging")
    with pytest.raises(ConflictError, match="stops serving"):
        registry.delete_alias(ws, "churn", "production")
    registry.delete_alias(ws, "churn", "production", force=True)
    assert registry.resolve_alias(ws, "churn") is None
    assert registry.last_known_good(ws, "churn") == 1  # a deleted production is no version
