"""Experiment tracking on SQLite and PostgreSQL: runs, params, metrics, artifacts, datasets."""

from __future__ import annotations

import hashlib
import math
import threading
from pathlib import Path

import pandas as pd
import pytest
from tests.support import loans

from closedloop.errors import InvalidInputError, NotFoundError
from closedloop.services.tracking import get_run, list_runs, start_run
from closedloop.services.workspace import Workspace


class Boom(RuntimeError):
    pass


def test_a_run_records_params_metrics_tags_artifacts_and_datasets(ws: Workspace) -> None:
    frame = loans(200)
    blob = b"confusion matrix \x00\x01\x02"
    with start_run(ws, name="baseline", experiment="churn", tags={"team": "risk"}) as run:
        run.log_params({"C": 1.0, "penalty": "l2", "layers": [3, 4], "none": None})
        run.log_param("max_iter", 500)
        run.set_tags({"stage": "dev"})
        for step, loss in enumerate([0.9, 0.5, 0.3]):
            run.log_metric("loss", loss, step=step)
        run.log_metrics({"auc": 0.8, "f1": 0.6}, step=3)
        sha = run.log_artifact("confusion.bin", blob)
        data_sha = run.log_dataset(frame, source="loans.parquet", role="training")

    info = get_run(ws, run.id)
    assert info.id == run.id
    assert (info.name, info.experiment, info.status, info.error) == (
        "baseline",
        "churn",
        "FINISHED",
        None,
    )
    assert info.ended_at is not None
    assert info.started_at <= info.ended_at
    # Plain values are kept as they are, anything else as its repr; later calls merge.
    assert info.params == {
        "C": 1.0,
        "penalty": "l2",
        "layers": "[3, 4]",
        "none": None,
        "max_iter": 500,
    }
    assert info.tags == {"team": "risk", "stage": "dev"}
    assert info.metric_history["loss"] == [(0, 0.9), (1, 0.5), (2, 0.3)]
    assert info.metric_history["auc"] == [(3, 0.8)]
    assert info.metrics == {"loss": 0.3, "auc": 0.8, "f1": 0.6}
    # Artifacts are content-addressed: named by the sha256 of their bytes, stored once, verified.
    assert sha == hashlib.sha256(blob).hexdigest()
    assert info.artifacts == {"confusion.bin": sha}
    assert ws.artifacts.get(sha) == blob
    stored = Path(ws.artifacts.path_of(sha))
    assert stored.name == sha
    assert stored.read_bytes() == blob
    assert info.datasets == [
        {
            "sha256": data_sha,
            "source": "loans.parquet",
            "role": "training",
            "n_rows": 200,
            "schema": {str(c): str(t) for c, t in frame.dtypes.items()},
        }
    ]
    # The environment and code version are captured when the run starts.
    assert "python" in info.environment
    assert "pandas" in info.environment["packages"]
    assert set(info.code) == {"git_commit", "git_dirty"}


def test_logging_an_artifact_again_under_the_same_name_replaces_it(ws: Workspace) -> None:
    with start_run(ws) as run:
        first = run.log_artifact("model.txt", b"v1")
        second = run.log_artifact("model.txt", b"v2")
    assert first != second
    assert get_run(ws, run.id).artifacts == {"model.txt": second}
    assert ws.artifacts.get(first) == b"v1"  # the content-addressed blob itself stays


def test_identical_bytes_from_two_runs_are_stored_once(ws: Workspace) -> None:
    with start_run(ws) as a:
        sha_a = a.log_artifact("report", b"same bytes")
    with start_run(ws) as b:
        sha_b = b.log_artifact("other-name", b"same bytes")
    assert sha_a == sha_b
    objects = [p for p in (Path(ws.settings.artifacts_url) / "objects").rglob("*") if p.is_file()]
    assert [p.name for p in objects] == [sha_a]


def test_dataset_hash_depends_on_content_not_on_identity_or_index(ws: Workspace) -> None:
    frame = loans(200)
    same = frame.copy()
    reindexed = frame.set_index(frame.index + 1000)
    changed = frame.copy()
    changed.loc[changed.index[17], "income"] += 1.0
    renamed = frame.rename(columns={"income": "salary"})
    retyped = frame.astype({"age": "float64"})
    with start_run(ws) as run:
        hashes = {
            "frame": run.log_dataset(frame, source="a"),
            "again": run.log_dataset(frame, source="a"),
            "copy": run.log_dataset(same, source="b"),
            "reindexed": run.log_dataset(reindexed, source="c"),
            "changed": run.log_dataset(changed, source="d"),
            "renamed": run.log_dataset(renamed, source="e"),
            "retyped": run.log_dataset(retyped, source="f"),
        }
    assert hashes["frame"] == hashes["again"] == hashes["copy"] == hashes["reindexed"]
    distinct = {hashes[k] for k in ("frame", "changed", "renamed", "retyped")}
    assert len(distinct) == 4
    used = get_run(ws, run.id).datasets
    # One link per (dataset, role): logging the same frame again does not duplicate it.
    assert sorted(d["sha256"] for d in used) == sorted(distinct)


def test_the_same_dataset_can_be_linked_under_two_roles(ws: Workspace) -> None:
    frame = loans(100)
    with start_run(ws) as run:
        sha = run.log_dataset(frame, source="x", role="training")
        assert run.log_dataset(frame, source="x", role="evaluation") == sha
    used = get_run(ws, run.id).datasets
    assert sorted(d["role"] for d in used) == ["evaluation", "training"]
    assert {d["sha256"] for d in used} == {sha}


def test_an_exception_in_the_block_marks_the_run_failed_and_propagates(ws: Workspace) -> None:
    with pytest.raises(Boom, match="disk on fire"), start_run(ws, name="doomed") as run:
        run.log_metric("loss", 0.5)
        raise Boom("disk on fire")
    info = get_run(ws, run.id)
    assert info.status == "FAILED"
    assert info.ended_at is not None
    assert info.error is not None
    assert "Traceback" in info.error
    assert "Boom: disk on fire" in info.error
    assert info.metrics == {"loss": 0.5}  # what was logged before the failure is kept


def test_a_keyboard_interrupt_also_marks_the_run_failed(ws: Workspace) -> None:
    with pytest.raises(KeyboardInterrupt), start_run(ws) as run:
        raise KeyboardInterrupt
    assert get_run(ws, run.id).status == "FAILED"


def test_a_run_in_progress_is_running(ws: Workspace) -> None:
    with start_run(ws) as run:
        info = get_run(ws, run.id)
        assert info.status == "RUNNING"
        assert info.ended_at is None
    assert get_run(ws, run.id).status == "FINISHED"


def test_runs_in_two_threads_never_mix(ws: Workspace) -> None:
    ws.metadata  # open the store (and create its schema) before the threads race  # noqa: B018
    barrier = threading.Barrier(2, timeout=60)
    ids: dict[str, str] = {}
    errors: list[BaseException] = []

    def work(who: str, offset: float) -> None:
        try:
            with start_run(ws, name=who, experiment="threads", tags={"who": who}) as run:
                ids[who] = run.id
                barrier.wait()  # both runs are open at the same time from here on
                for step in range(8):
                    run.log_metric("value", offset + step, step=step)
                    run.log_params({f"{who}_{step}": step})
                    run.set_tags({"last": who})
                run.log_artifact("who", who.encode())
                barrier.wait()
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    threads = [
        threading.Thread(target=work, args=("alpha", 0.0)),
        threading.Thread(target=work, args=("beta", 100.0)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert ids["alpha"] != ids["beta"]
    for who, offset in (("alpha", 0.0), ("beta", 100.0)):
        info = get_run(ws, ids[who])
        assert info.name == who
        assert info.status == "FINISHED"
        assert info.metric_history == {"value": [(s, offset + s) for s in range(8)]}
        assert info.params == {f"{who}_{s}": s for s in range(8)}
        assert info.tags == {"who": who, "last": who}
        assert info.artifacts == {"who": hashlib.sha256(who.encode()).hexdigest()}


def test_a_nested_run_does_not_capture_the_outer_runs_logging(ws: Workspace) -> None:
    with start_run(ws, name="outer") as outer:
        with start_run(ws, name="inner") as inner:
            inner.log_metric("m", 1.0)
            outer.log_metric("m", 2.0)
        outer.log_param("p", "outer")
    assert get_run(ws, outer.id).metrics == {"m": 2.0}
    assert get_run(ws, outer.id).params == {"p": "outer"}
    assert get_run(ws, inner.id).metrics == {"m": 1.0}
    assert get_run(ws, inner.id).params == {}


def test_get_run_accepts_a_unique_prefix(ws: Workspace) -> None:
    with start_run(ws) as first:
        pass
    with start_run(ws) as second:
        pass
    shortest = next(first.id[:n] for n in range(1, 33) if not second.id.startswith(first.id[:n]))
    assert get_run(ws, shortest).id == first.id
    assert get_run(ws, first.id[:12]).id == first.id
    assert get_run(ws, second.id).id == second.id


def test_get_run_refuses_an_ambiguous_prefix(ws: Workspace) -> None:
    seen: dict[str, str] = {}
    for _ in range(17):  # 16 hex digits: by the 17th run two share a first character
        with start_run(ws) as run:
            pass
        if run.id[0] in seen:
            break
        seen[run.id[0]] = run.id
    else:  # pragma: no cover - pigeonhole
        pytest.fail("no two runs share a first character")
    with pytest.raises(NotFoundError, match="uniquely"):
        get_run(ws, run.id[0])
    assert get_run(ws, run.id).id == run.id


def test_get_run_refuses_an_unknown_id(ws: Workspace) -> None:
    with start_run(ws) as run:
        pass
    unknown = ("0" if run.id[0] != "0" else "1") + run.id[1:]
    with pytest.raises(NotFoundError, match="No run matches"):
        get_run(ws, unknown)
    with pytest.raises(NotFoundError):
        get_run(ws, "not-a-run")


def test_get_run_treats_the_prefix_literally(ws: Workspace) -> None:
    with start_run(ws):
        pass
    with pytest.raises(NotFoundError):
        get_run(ws, "_" * 32)  # no run id contains an underscore
    with pytest.raises(NotFoundError):
        get_run(ws, "%")


def test_list_runs_is_newest_first_and_filters_by_experiment(ws: Workspace) -> None:
    order = []
    for experiment in ("a", "b", "a", "b", "a"):
        with start_run(ws, experiment=experiment) as run:
            pass
        order.append((run.id, experiment))
    newest_first = [rid for rid, _ in reversed(order)]
    assert [r.id for r in list_runs(ws)] == newest_first
    assert [r.id for r in list_runs(ws, experiment="a")] == [
        rid for rid, e in reversed(order) if e == "a"
    ]
    assert [r.id for r in list_runs(ws, experiment="b")] == [
        rid for rid, e in reversed(order) if e == "b"
    ]
    assert list_runs(ws, experiment="c") == []
    assert [r.id for r in list_runs(ws, limit=2)] == newest_first[:2]
    assert [r.id for r in list_runs(ws, experiment="a", limit=1)] == [order[4][0]]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, float("nan")])
def test_a_non_finite_metric_is_refused_and_nothing_is_written(ws: Workspace, bad: float) -> None:
    with start_run(ws) as run:
        with pytest.raises(InvalidInputError, match="'loss' must be a finite number"):
            run.log_metric("loss", bad)
        with pytest.raises(InvalidInputError, match="finite"):
            run.log_metrics({"ok": 1.0, "loss": bad}, step=1)
        run.log_metric("loss", 0.25)
    info = get_run(ws, run.id)
    assert info.status == "FINISHED"
    assert info.metric_history == {"loss": [(0, 0.25)]}


def test_numpy_and_integer_metric_values_are_stored_as_floats(ws: Workspace) -> None:
    import numpy as np

    with start_run(ws) as run:
        run.log_metrics({"int": 3, "np": np.float32(0.5), "np64": np.float64(0.125)})
    assert get_run(ws, run.id).metrics == {"int": 3.0, "np": 0.5, "np64": 0.125}


def test_run_info_round_trips_to_a_json_ready_dict(ws: Workspace) -> None:
    import json

    with start_run(ws, name="r", experiment="e") as run:
        run.log_metric("auc", 0.7, step=2)
        run.log_dataset(pd.DataFrame({"x": [1, 2, 3]}), source="inline")
    out = json.loads(json.dumps(get_run(ws, run.id).to_dict()))
    assert out["id"] == run.id
    assert out["status"] == "FINISHED"
    assert out["metric_history"] == {"auc": [[2, 0.7]]}
    assert out["datasets"][0]["n_rows"] == 3


class ManyParams:
    """An estimator-like object with more parameters than a run keeps, one of them huge."""

    def get_params(self, deep: bool = True) -> dict[str, object]:
        import numpy as np

        params: dict[str, object] = {f"p{i:04d}": i for i in range(400)}
        params["p0000"] = "v" * 5000
        params["p0001"] = np.float32(0.5)
        params["p0002"] = np.arange(1000)
        params["p0003"] = float("nan")
        return params


def test_estimator_params_are_json_ready_and_bounded(ws: Workspace) -> None:
    from closedloop.services.tracking import MAX_ESTIMATOR_PARAMS, MAX_PARAM_CHARS

    with start_run(ws) as run:
        recorded = run.log_estimator_params(ManyParams(), prefix="model.")
        assert run.log_estimator_params(object()) == {}  # no get_params: nothing to record

    params = get_run(ws, run.id).params
    assert params == recorded
    assert len(params) == MAX_ESTIMATOR_PARAMS + 1
    assert params["model._omitted"] == 400 - MAX_ESTIMATOR_PARAMS
    assert len(params["model.p0000"]) == MAX_PARAM_CHARS
    assert params["model.p0000"].endswith("…")
    assert params["model.p0001"] == 0.5
    assert len(params["model.p0002"]) <= MAX_PARAM_CHARS
    assert params["model.p0003"] == "nan"
    assert params["model.p0299"] == 299
    assert "model.p0300" not in params


def test_a_metric_name_longer_than_the_store_holds_is_refused(ws: Workspace) -> None:
    with start_run(ws) as run:
        with pytest.raises(InvalidInputError, match=r"1 to 200 characters\. Got 201"):
            run.log_metric("m" * 201, 1.0)
        run.log_metric("m" * 200, 1.0)
    assert get_run(ws, run.id).metrics == {"m" * 200: 1.0}
