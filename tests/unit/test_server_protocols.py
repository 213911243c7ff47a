"""The inference server speaks the Open Inference Protocol v2 and the MLflow scoring protocol."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import orjson
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from closedloop.domain.model import LoadedVersion
from closedloop.domain.signature import infer_signature
from closedloop.server import create_app
from closedloop.testing.hosts import StaticModelHost

COLUMNS = ["income", "age", "member", "plan"]


def training_frame(n: int = 200, seed: int = 7) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "income": rng.normal(50.0, 10.0, n),
            "age": rng.integers(18, 80, n),
            "member": rng.random(n) < 0.5,
            "plan": rng.choice(["basic", "plus", "pro"], n),
        }
    )
    logit = 0.1 * (frame["income"] - 50) + 0.05 * (frame["age"] - 50) + frame["member"] * 1.0
    label = (logit + rng.normal(0, 1, n) > 0.5).astype(int).to_numpy()
    price = (2 * frame["income"] + frame["age"]).to_numpy()
    return frame, label, price


def pipeline(estimator: Any) -> Pipeline:
    columns = ColumnTransformer(
        [
            ("plan", OneHotEncoder(handle_unknown="ignore"), ["plan"]),
            ("numbers", StandardScaler(), ["income", "age", "member"]),
        ]
    )
    return Pipeline([("columns", columns), ("model", estimator)])


@dataclass
class Models:
    frame: pd.DataFrame
    churn: LoadedVersion
    price: LoadedVersion

    def version(self, loaded: LoadedVersion, version: int) -> LoadedVersion:
        return LoadedVersion(
            loaded.model, version, loaded.sha256, loaded.signature, loaded.estimator
        )


@pytest.fixture(scope="module")
def models() -> Models:
    frame, label, price = training_frame()
    signature = infer_signature(frame)
    churn = pipeline(LogisticRegression(max_iter=1000)).fit(frame, label)
    regressor = pipeline(LinearRegression()).fit(frame, price)
    return Models(
        frame=frame,
        churn=LoadedVersion("churn", 3, "0" * 64, signature, churn),
        price=LoadedVersion("price", 1, "1" * 64, signature, regressor),
    )


@dataclass
class RecordingSink:
    calls: list[dict[str, Any]] = field(default_factory=list)

    def append(
        self,
        model: str,
        version: int,
        request_ids: Sequence[str] | str,
        inputs: pd.DataFrame,
        labels: np.ndarray,
        scores: np.ndarray | None,
        *,
        latency_ms: float | None = None,
        role: str = "primary",
    ) -> None:
        self.calls.append(
            {
                "model": model,
                "version": version,
                "request_ids": request_ids,
                "inputs": inputs,
                "labels": labels,
                "scores": scores,
                "latency_ms": latency_ms,
                "role": role,
            }
        )

    def append_failure(
        self, model: str, version: int, request_id: str, *, status: int, latency_ms: float
    ) -> None:
        self.calls.append(
            {
                "model": model,
                "version": version,
                "request_ids": request_id,
                "status": status,
                "latency_ms": latency_ms,
                "role": "primary",
            }
        )


@pytest.fixture
def host(models: Models) -> StaticModelHost:
    return StaticModelHost({"churn": models.churn})


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


class InProcessClient:
    """A synchronous in-process client over httpx's ASGITransport (no network, no threads)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                return await c.request(method, url, **kwargs)

        return asyncio.run(send())

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)


@pytest.fixture
def client(host: StaticModelHost, sink: RecordingSink) -> InProcessClient:
    return InProcessClient(create_app(host, prediction_log=sink))


REQUEST = pd.DataFrame(
    {
        "income": [41.5, 63.0, 50.25],
        "age": [25, 61, 40],
        "member": [True, False, True],
        "plan": ["basic", "pro", "plus"],
    }
)


def records() -> list[dict[str, Any]]:
    return [
        {str(k): (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
        for row in REQUEST.to_dict(orient="records")
    ]


def rows() -> list[list[Any]]:
    return [list(r.values()) for r in records()]


def columnar() -> dict[str, list[Any]]:
    return {c: [r[c] for r in records()] for c in COLUMNS}


def expected(models: Models) -> list[Any]:
    return list(models.churn.estimator.predict(REQUEST[COLUMNS]).tolist())


def post_json(
    client: InProcessClient, url: str, body: object, headers: dict[str, str] | None = None
) -> httpx.Response:
    headers = {"Content-Type": "application/json", **(headers or {})}
    return client.post(url, content=orjson.dumps(body), headers=headers)


# --- MLflow scoring protocol ------------------------------------------------------------------

MLFLOW_BODIES: dict[str, Callable[[], dict[str, Any]]] = {
    "dataframe_split": lambda: {"dataframe_split": {"columns": COLUMNS, "data": rows()}},
    "dataframe_split with index": lambda: {
        "dataframe_split": {"index": [0, 1, 2], "columns": COLUMNS, "data": rows()}
    },
    "dataframe_records": lambda: {"dataframe_records": records()},
    "instances records": lambda: {"instances": records()},
    "instances rows": lambda: {"instances": rows()},
    "inputs columns": lambda: {"inputs": columnar(), "params": {}},
    "inputs records": lambda: {"inputs": records()},
    "inputs rows": lambda: {"inputs": rows()},
}


@pytest.mark.parametrize("fmt", sorted(MLFLOW_BODIES))
def test_every_mlflow_json_format_gives_the_estimator_predictions(
    client: InProcessClient, models: Models, fmt: str
) -> None:
    response = post_json(client, "/invocations", MLFLOW_BODIES[fmt]())
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": expected(models)}


def test_mlflow_csv_gives_the_estimator_predictions(
    client: InProcessClient, models: Models
) -> None:
    csv = REQUEST.to_csv(index=False).encode()
    response = client.post("/invocations", content=csv, headers={"Content-Type": "text/csv"})
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": expected(models)}


def test_columns_may_come_in_any_order(client: InProcessClient, models: Models) -> None:
    body = {"dataframe_split": {"columns": COLUMNS[::-1], "data": [r[::-1] for r in rows()]}}
    assert post_json(client, "/invocations", body).json()["predictions"] == expected(models)


def test_responses_carry_request_id_and_model_version(client: InProcessClient) -> None:
    response = post_json(
        client, "/invocations", {"inputs": columnar()}, headers={"X-Request-ID": "abc-123"}
    )
    assert response.headers["X-Request-ID"] == "abc-123"
    assert response.headers["X-Model-Name"] == "churn"
    assert response.headers["X-Model-Version"] == "3"
    generated = post_json(client, "/invocations", {"inputs": columnar()})
    assert len(generated.headers["X-Request-ID"]) == 32


def test_a_swapped_version_answers_the_next_request(
    client: InProcessClient, host: StaticModelHost, models: Models
) -> None:
    assert (
        post_json(client, "/invocations", {"inputs": columnar()}).headers["X-Model-Version"] == "3"
    )
    host.set("churn", models.version(models.churn, 4))
    response = post_json(client, "/v2/models/churn/infer", oip_columns())
    assert response.json()["model_version"] == "4"
    assert response.headers["X-Model-Version"] == "4"


def test_unseen_category_and_out_of_range_values_are_answered(client: InProcessClient) -> None:
    body = {"dataframe_records": [{"income": 1e9, "age": -5, "member": 1, "plan": "enterprise"}]}
    response = post_json(client, "/invocations", body)
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 1


def test_a_value_an_integer_column_cannot_hold_is_a_422_and_nothing_is_logged(
    client: InProcessClient, sink: RecordingSink
) -> None:
    body = {"dataframe_records": [{"income": 50.0, "age": 1e300, "member": 1, "plan": "pro"}]}
    response = post_json(client, "/invocations", body)
    assert response.status_code == 422, response.text
    assert response.json()["message"] == (
        "column 'age' holds integers from -9223372036854775808 to 9223372036854775807; "
        "row 0 has 1e+300"
    )
    assert sink.calls == []


@pytest.mark.parametrize("value", ["inf", "-inf", "Infinity"])
def test_an_infinite_number_is_a_422_naming_the_column(
    client: InProcessClient, sink: RecordingSink, value: str
) -> None:
    csv = f"income,age,member,plan\n{value},30,true,pro\n".encode()
    response = client.post("/invocations", content=csv, headers={"Content-Type": "text/csv"})
    assert response.status_code == 422, response.text
    assert response.json()["message"].startswith("column 'income' expects finite numbers; row 0")
    assert sink.calls == []


def test_the_sink_records_model_version_request_id_and_rows(
    client: InProcessClient, sink: RecordingSink, models: Models
) -> None:
    post_json(client, "/invocations", {"inputs": columnar()}, headers={"X-Request-ID": "r-1"})
    (call,) = sink.calls
    assert (call["model"], call["version"], call["request_ids"]) == ("churn", 3, "r-1")
    pd.testing.assert_frame_equal(call["inputs"], REQUEST, check_dtype=False)
    assert call["labels"].tolist() == expected(models)
    assert call["scores"].shape == (3,)


def bad(body: object, content_type: str = "application/json") -> tuple[bytes, str]:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return raw, content_type


def with_row(**changes: Any) -> dict[str, Any]:
    return {"dataframe_records": [{**records()[0], **changes}]}


BAD_MLFLOW = {
    "missing column": (
        bad({"inputs": {k: v for k, v in columnar().items() if k != "age"}}),
        422,
        "missing column(s) 'age'",
    ),
    "unknown column": (bad(with_row(colour="red")), 422, "unknown column(s) 'colour'"),
    "string in float column": (bad(with_row(income="lots")), 422, "column 'income' expects float"),
    "fraction in integer column": (bad(with_row(age=30.5)), 422, "column 'age' expects integer"),
    "number in string column": (bad(with_row(plan=3)), 422, "column 'plan' expects string"),
    "non-bool in boolean column": (bad(with_row(member="yes")), 422, "column 'member'"),
    "null in non-nullable column": (bad(with_row(age=None)), 422, "does not accept nulls"),
    "unequal column lengths": (bad({"inputs": {**columnar(), "age": [1]}}), 422, "unequal"),
    "row of the wrong width": (
        bad({"dataframe_split": {"columns": COLUMNS, "data": [[1.0, 2]]}}),
        422,
        "row 0 has 2 values",
    ),
    "malformed json": (bad(b'{"inputs": ['), 400, "not valid JSON"),
    "empty body": (bad(b""), 400, "empty"),
    "top-level array": (bad([1, 2]), 400, "must be a JSON object"),
    "two format keys": (
        bad({"inputs": columnar(), "instances": records()}),
        400,
        "exactly one of the keys",
    ),
    "no format key": (bad({"data": rows()}), 400, "exactly one of the keys"),
    "records not objects": (bad({"dataframe_records": [1, 2]}), 400, "record 0"),
    "no rows": (bad({"inputs": {c: [] for c in COLUMNS}}), 400, "no rows"),
    "unsupported content type": (
        bad(b"a=1", "application/x-www-form-urlencoded"),
        415,
        "Content-Type",
    ),
    "csv with a bad number": (
        bad(b"income,age,member,plan\nabc,1,true,basic\n", "text/csv"),
        422,
        "column 'income'",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_MLFLOW))
def test_each_bad_mlflow_request_gets_a_4xx_naming_the_problem(
    client: InProcessClient, case: str
) -> None:
    (raw, content_type), status, fragment = BAD_MLFLOW[case]
    response = client.post("/invocations", content=raw, headers={"Content-Type": content_type})
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error_code"] == "BAD_REQUEST"
    assert fragment in body["message"]
    assert body["closedloop_error"]["message"] == body["message"]
    assert response.headers["X-Request-ID"]


def test_wrong_type_errors_carry_machine_readable_details(client: InProcessClient) -> None:
    response = post_json(client, "/invocations", with_row(income="lots"))
    details = response.json()["closedloop_error"]["details"]
    assert details == {"column": "income", "expected": "float", "got": "lots", "row": 0}
    assert response.headers["X-Model-Version"] == "3"


def test_invocations_with_several_models_needs_a_choice(
    client: InProcessClient, host: StaticModelHost, models: Models
) -> None:
    host.set("price", models.price)
    unchosen = post_json(client, "/invocations", {"inputs": columnar()})
    assert unchosen.status_code == 400
    assert "churn, price" in unchosen.json()["message"]
    by_header = post_json(
        client, "/invocations", {"inputs": columnar()}, headers={"X-Closedloop-Model": "price"}
    )
    by_query = post_json(client, "/invocations?model=price", {"inputs": columnar()})
    by_path = post_json(client, "/models/price/invocations", {"inputs": columnar()})
    want = pytest.approx(models.price.estimator.predict(REQUEST[COLUMNS]).tolist())
    for response in (by_header, by_query, by_path):
        assert response.headers["X-Model-Name"] == "price"
        assert response.json()["predictions"] == want


def test_unknown_model_is_404(client: InProcessClient) -> None:
    response = post_json(client, "/models/nope/invocations", {"inputs": columnar()})
    assert response.status_code == 404
    assert response.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    assert "'nope'" in response.json()["message"]


def test_health_and_version(client: InProcessClient, host: StaticModelHost) -> None:
    assert client.get("/ping").status_code == 200
    assert client.get("/health").status_code == 200
    assert client.get("/version").text
    host.set_ready(False)
    assert client.get("/ping").status_code == 503
    assert client.get("/v2/health/ready").status_code == 503
    assert client.get("/v2/health/live").status_code == 200


def test_a_server_with_nothing_to_serve_is_live_but_not_ready() -> None:
    client = InProcessClient(create_app(StaticModelHost({})))
    for path in ("/ping", "/health", "/v2/health/ready"):
        answer = client.get(path)
        assert answer.status_code == 503, path
        assert "no model has a production version yet" in answer.text, path
        assert "closedloop train" in answer.text, path
    assert client.get("/ping").json()["error"]["code"] == "model_load_error"
    assert client.get("/v2/health/ready").json()["closedloop_error"]["hint"]
    assert client.get("/v2/health/live").status_code == 200
    invocations = post_json(client, "/invocations", {"inputs": columnar()})
    assert invocations.status_code == 503
    assert "no model has a production version yet" in invocations.json()["message"]


def test_an_estimator_failure_is_a_json_500(
    client: InProcessClient, host: StaticModelHost, models: Models
) -> None:
    class Broken:
        def predict(self, frame: pd.DataFrame) -> np.ndarray:
            raise RuntimeError("boom")

    churn = models.churn
    host.set("churn", LoadedVersion("churn", 9, churn.sha256, churn.signature, Broken()))
    response = post_json(client, "/invocations", {"inputs": columnar()})
    assert response.status_code == 500
    assert response.json()["error_code"] == "INTERNAL_ERROR"
    assert "boom" in response.json()["message"]
    assert response.headers["X-Model-Version"] == "9"


def test_unknown_route_is_a_json_404(client: InProcessClient) -> None:
    response = client.get("/nowhere")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


# --- Open Inference Protocol v2 ---------------------------------------------------------------

DATATYPES = {"income": "FP64", "age": "INT64", "member": "BOOL", "plan": "BYTES"}


def oip_columns(shape_suffix: Sequence[int] = (), nested: bool = False) -> dict[str, Any]:
    inputs = []
    for name, values in columnar().items():
        data: list[Any] = [[v] for v in values] if nested else values
        inputs.append(
            {
                "name": name,
                "shape": [len(values), *shape_suffix],
                "datatype": DATATYPES[name],
                "data": data,
            }
        )
    return {"inputs": inputs}


@pytest.mark.parametrize(
    "body",
    [oip_columns(), oip_columns((1,)), oip_columns((1,), nested=True)],
    ids=["shape [n]", "shape [n,1]", "shape [n,1] nested"],
)
def test_oip_per_column_tensors(
    client: InProcessClient, models: Models, body: dict[str, Any]
) -> None:
    response = post_json(client, "/v2/models/churn/infer", body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model_name"] == "churn"
    assert answer["model_version"] == "3"
    predict, proba = answer["outputs"]
    assert predict == {
        "name": "predict",
        "shape": [3],
        "datatype": "INT64",
        "data": expected(models),
    }
    want = models.churn.estimator.predict_proba(REQUEST[COLUMNS])[:, 1]
    assert proba["name"] == "predict_proba"
    assert proba["data"] == pytest.approx(want.tolist())


@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested"])
def test_oip_single_2d_tensor_in_signature_order(
    client: InProcessClient, models: Models, nested: bool
) -> None:
    data: list[Any] = rows() if nested else [v for row in rows() for v in row]
    body = {"inputs": [{"name": "x", "shape": [3, 4], "datatype": "BYTES", "data": data}]}
    response = post_json(client, "/v2/models/churn/versions/3/infer", body)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == expected(models)


def test_oip_echoes_the_request_id(client: InProcessClient) -> None:
    echoed = post_json(client, "/v2/models/churn/infer", {"id": "req-9", **oip_columns()})
    assert echoed.json()["id"] == "req-9"
    generated = post_json(client, "/v2/models/churn/infer", oip_columns())
    answer = generated.json()
    assert answer["id"] == answer["parameters"]["request_id"]
    assert answer["id"] == generated.headers["X-Request-ID"]


def test_oip_requested_outputs(client: InProcessClient) -> None:
    body = {**oip_columns(), "outputs": [{"name": "predict_proba"}]}
    outputs = post_json(client, "/v2/models/churn/infer", body).json()["outputs"]
    assert [o["name"] for o in outputs] == ["predict_proba"]


def test_oip_metadata_and_readiness(client: InProcessClient) -> None:
    assert client.get("/v2").json()["name"] == "closedloop"
    assert client.get("/v2/health/ready").status_code == 200
    meta = client.get("/v2/models/churn").json()
    assert meta["name"] == "churn"
    assert meta["versions"] == ["3"]
    assert meta["platform"] == "sklearn"
    assert meta["inputs"] == [{"name": n, "datatype": DATATYPES[n], "shape": [-1]} for n in COLUMNS]
    assert [o["name"] for o in meta["outputs"]] == ["predict", "predict_proba"]
    assert client.get("/v2/models/churn/ready").json()["ready"] is True
    assert client.get("/v2/models/churn/versions/3").status_code == 200
    assert client.get("/v2/models/churn/versions/3/ready").status_code == 200
    assert client.get("/v2/models/churn/versions/2/ready").status_code == 404


def one_tensor(**changes: Any) -> dict[str, Any]:
    body = oip_columns()
    body["inputs"][0] = {**body["inputs"][0], **changes}
    return body


BAD_OIP = {
    "data shorter than shape": (one_tensor(shape=[4]), 422, "holds 4 values but 'data' has 3"),
    "unknown datatype": (one_tensor(datatype="FLOAT"), 422, "unknown datatype 'FLOAT'"),
    "wrong type": (one_tensor(data=["a", "b", "c"]), 422, "column 'income' expects float"),
    "missing column": ({"inputs": oip_columns()["inputs"][1:]}, 422, "missing column(s) 'income'"),
    "unknown column": (one_tensor(name="salary"), 422, "unknown column(s) 'salary'"),
    "2-D tensor of wrong width": (
        {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]},
        422,
        "has 3 columns; the model expects 4",
    ),
    "no inputs": ({"id": "x"}, 400, "'inputs' must be a non-empty array"),
    "bad shape": (one_tensor(shape="3"), 422, "'shape' must be an array"),
    "unknown output": ({**oip_columns(), "outputs": [{"name": "logits"}]}, 400, "'logits'"),
}


@pytest.mark.parametrize("case", sorted(BAD_OIP))
def test_each_bad_oip_request_gets_a_4xx_in_the_oip_error_shape(
    client: InProcessClient, case: str
) -> None:
    body, status, fragment = BAD_OIP[case]
    response = post_json(client, "/v2/models/churn/infer", body)
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]
    assert response.json()["closedloop_error"]["message"] == response.json()["error"]


def test_oip_malformed_json_unknown_model_and_version(client: InProcessClient) -> None:
    malformed = client.post("/v2/models/churn/infer", content=b"{nope")
    assert malformed.status_code == 400
    assert "not valid JSON" in malformed.json()["error"]
    unknown = post_json(client, "/v2/models/nope/infer", oip_columns())
    assert unknown.status_code == 404
    assert "'nope'" in unknown.json()["error"]
    assert "X-Model-Version" not in unknown.headers
    stale = post_json(client, "/v2/models/churn/versions/2/infer", oip_columns())
    assert stale.status_code == 404
    not_a_number = post_json(client, "/v2/models/churn/versions/latest/infer", oip_columns())
    assert not_a_number.status_code == 400
    assert "integer" in not_a_number.json()["error"]


@pytest.mark.parametrize(
    "version", ["99999999999999999999", "2147483648", "0", "-1", "+3", "3_000", "\u0663"]
)
@pytest.mark.parametrize("route", ["ready", "infer", ""])
def test_a_path_version_out_of_range_is_a_400_naming_the_parameter(
    client: InProcessClient, sink: RecordingSink, version: str, route: str
) -> None:
    url = f"/v2/models/churn/versions/{version}" + (f"/{route}" if route else "")
    response = post_json(client, url, oip_columns()) if route == "infer" else client.get(url)
    assert response.status_code == 400, response.text
    error = response.json()["closedloop_error"]
    assert error["code"] == "invalid_input"
    assert "'version' must be an integer from 1 to 2147483647" in error["message"]
    assert error["details"] == {"parameter": "version", "minimum": 1, "maximum": 2147483647}
    assert sink.calls == []


def test_a_version_outside_the_serving_plan_is_not_answered_by_number(
    client: InProcessClient, host: StaticModelHost, models: Models, sink: RecordingSink
) -> None:
    canary = models.version(models.churn, 5)
    host.set_canary("churn", canary, 0.1)
    assert post_json(client, "/v2/models/churn/versions/5/infer", oip_columns()).status_code == 200
    sink.calls.clear()
    response = post_json(client, "/v2/models/churn/versions/4/infer", oip_columns())
    assert response.status_code == 404
    assert "X-Model-Version" not in response.headers
    assert sink.calls == []


def test_who_may_load_a_version_outside_the_plan_is_one_seam_loaded_off_the_event_loop(
    host: StaticModelHost, models: Models
) -> None:
    import threading

    app = create_app(host)
    loaded_in: list[str] = []

    def load_version(name: str, version: int) -> LoadedVersion:
        loaded_in.append(threading.current_thread().name)
        return models.version(models.churn, version)

    host.load_version = load_version  # type: ignore[method-assign]
    client = InProcessClient(app)
    assert post_json(client, "/v2/models/churn/versions/2/infer", oip_columns()).status_code == 404
    assert loaded_in == []  # nobody may, by default
    app.state.context.outside_plan = lambda request: True
    response = post_json(client, "/v2/models/churn/versions/2/infer", oip_columns())
    assert response.status_code == 200, response.text
    assert response.headers["X-Model-Version"] == "2"
    assert loaded_in and loaded_in[0] != threading.main_thread().name


def test_a_body_declared_larger_than_the_limit_is_a_413_before_it_is_read(
    host: StaticModelHost, sink: RecordingSink
) -> None:
    client = InProcessClient(create_app(host, prediction_log=sink, max_body_bytes=1000))
    body = orjson.dumps({"dataframe_split": {"columns": COLUMNS, "data": rows() * 20}})
    assert len(body) > 1000
    response = client.post("/invocations", content=body, headers={"Content-Type": JSON})
    assert response.status_code == 413
    assert response.json()["message"] == (
        f"the request body of {len(body)} bytes is larger than this server takes (1000 bytes)"
    )
    assert response.json()["closedloop_error"]["code"] == "too_large"
    assert response.headers["X-Request-ID"]
    assert sink.calls == []


def test_a_streamed_body_is_cut_off_with_a_413_once_it_passes_the_limit(
    host: StaticModelHost, sink: RecordingSink
) -> None:
    client = InProcessClient(create_app(host, prediction_log=sink, max_body_bytes=1000))
    sent: list[int] = []

    async def chunks() -> Any:
        for _ in range(100):
            sent.append(1)
            yield b" " * 400

    response = client.post("/v2/models/churn/infer", content=chunks())
    assert response.status_code == 413
    assert response.json()["error"] == (
        "the request body is larger than this server takes (1000 bytes)"
    )
    assert len(sent) < 100
    assert sink.calls == []


def test_more_rows_than_the_limit_is_a_413_naming_it(
    host: StaticModelHost, sink: RecordingSink
) -> None:
    client = InProcessClient(create_app(host, prediction_log=sink, max_rows=5))
    body = {"dataframe_split": {"columns": COLUMNS, "data": rows() * 2}}
    response = post_json(client, "/invocations", body)
    assert response.status_code == 413
    assert response.json()["message"] == (
        "the request has 6 rows; this server takes at most 5 rows per request"
    )
    assert sink.calls == []
    assert post_json(client, "/invocations", {"inputs": rows()}).status_code == 200


@pytest.mark.parametrize("setting", ["max_body_bytes", "max_rows"])
def test_a_limit_that_is_not_a_positive_int_is_a_config_error(
    host: StaticModelHost, setting: str
) -> None:
    from closedloop.errors import ConfigError

    with pytest.raises(ConfigError, match=f"server.{setting} must be an int >= 1. Got 0"):
        create_app(host, **{setting: 0})


JSON = "application/json"
REFUSED_MEDIA = {
    "/invocations": "text/plain",
    "/models/churn/invocations": "application/x-www-form-urlencoded",
    "/v2/models/churn/infer": "text/csv",
    "/models/churn/feedback": "text/plain; charset=utf-8",
}


@pytest.mark.parametrize("path", sorted(REFUSED_MEDIA))
def test_a_body_of_a_type_the_route_does_not_read_is_a_415(
    host: StaticModelHost, sink: RecordingSink, path: str, tmp_path: Any
) -> None:
    from closedloop.storage.feedback import FeedbackLog

    app = create_app(host, prediction_log=sink, feedback_log=FeedbackLog(str(tmp_path)))
    body = oip_columns() if "/v2/" in path else {"inputs": rows()}
    media = REFUSED_MEDIA[path]
    response = InProcessClient(app).post(
        path, content=orjson.dumps(body), headers={"Content-Type": media}
    )
    assert response.status_code == 415, response.text
    error = response.json().get("closedloop_error") or response.json()["error"]
    assert error["code"] == "unsupported_media_type"
    assert error["message"].startswith(f"unsupported Content-Type {media.split(';')[0]!r}")
    assert sink.calls == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "media", ["application/json; charset=utf-8", "Application/JSON;charset=UTF-8", None]
)
def test_json_with_a_charset_or_without_a_content_type_is_read(
    client: InProcessClient, media: str | None
) -> None:
    headers = {"Content-Type": media} if media else {}
    for path, body in (
        ("/invocations", {"inputs": rows()}),
        ("/v2/models/churn/infer", oip_columns()),
    ):
        response = client.post(path, content=orjson.dumps(body), headers=headers)
        assert response.status_code == 200, (path, response.text)


def _metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus exposition."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(name + "{"):
            sample_labels, value = line[len(name) + 1 :].rsplit("} ", 1)
            if ",".join(sorted(sample_labels.split(","))) == wanted:
                return float(value)
    raise AssertionError(f"no sample {name}{{{wanted}}} in:\n{text}")


def test_metrics_count_requests_errors_and_latency_per_model_and_version(
    client: InProcessClient,
) -> None:
    url = "/models/churn/invocations"
    for _ in range(3):
        assert post_json(client, url, {"dataframe_records": records()}).status_code == 200
    assert post_json(client, url, {"dataframe_records": [{"age": 3}]}).status_code == 422
    text = client.get("/metrics").text
    ok = {"model": "churn", "version": "3", "protocol": "mlflow"}
    assert _metric(text, "closedloop_requests_total", status="200", **ok) == 3
    assert _metric(text, "closedloop_request_errors_total", status="422", **ok) == 1
    assert _metric(text, "closedloop_request_latency_seconds_count", **ok) == 4
    assert _metric(text, "closedloop_traffic_weight", model="churn", version="3") == 1.0


@pytest.mark.parametrize(
    ("url", "body"),
    [
        ("/models/churn/invocations", {"dataframe_records": [{}]}),
        (
            "/v2/models/churn/infer",
            {"inputs": [{"name": "age", "shape": [1], "datatype": ["FP64"], "data": [1]}]},
        ),
        (
            "/v2/models/churn/infer",
            {
                "inputs": [
                    {"name": "", "shape": [1502321, 12278829939614], "datatype": "FP64", "data": []}
                ]
            },
        ),
    ],
    ids=["record-without-columns", "datatype-not-a-string", "shape-beyond-64-bits"],
)
def test_inputs_found_by_fuzzing_get_a_4xx_not_a_500(
    client: InProcessClient, url: str, body: object
) -> None:
    answer = post_json(client, url, body)
    assert 400 <= answer.status_code < 500, answer.text
    assert answer.json()  # still a JSON error body


# --- canary routing and shadow mirroring ---------------------------------------------------


def _served_versions(client: InProcessClient, keys: list[str]) -> list[str]:
    answers = [
        post_json(
            client,
            "/models/churn/invocations",
            {"dataframe_records": records()},
            headers={"X-Routing-Key": key},
        )
        for key in keys
    ]
    assert all(a.status_code == 200 for a in answers)
    return [a.headers["x-model-version"] for a in answers]


def test_a_canary_gets_its_share_of_callers_and_each_caller_stays_on_its_side(
    client: InProcessClient, host: StaticModelHost, models: Models
) -> None:
    host.set_canary("churn", models.version(models.churn, 4), 0.2)
    keys = [f"user-{i}" for i in range(600)]
    first = _served_versions(client, keys)
    share = first.count("4") / len(first)
    assert 0.14 < share < 0.26  # 20 % ± three standard errors of 600 draws
    assert _served_versions(client, keys[:100]) == first[:100]  # sticky per key
    host.set_canary("churn", models.version(models.churn, 4), 0.5)
    wider = _served_versions(client, keys)
    moved_back = [k for k, a, b in zip(keys, first, wider, strict=True) if a == "4" and b != "4"]
    assert moved_back == []  # raising the weight only moves callers onto the canary


def test_without_a_routing_key_the_request_id_decides(
    client: InProcessClient, host: StaticModelHost, models: Models
) -> None:
    host.set_canary("churn", models.version(models.churn, 4), 1.0)
    assert _served_versions(client, [""])[0] == "4"
    host.set_canary("churn", None)
    assert _served_versions(client, ["anyone"])[0] == "3"


def test_a_shadow_gets_a_copy_of_every_request_logged_but_never_returned(
    models: Models,
) -> None:
    import time as _time

    host = StaticModelHost({"churn": models.churn})
    host.set_shadow("churn", models.version(models.churn, 9))
    sink = RecordingSink()
    client = InProcessClient(create_app(host, prediction_log=sink))
    ids = [f"req-{i}" for i in range(20)]
    for request_id in ids:
        answer = post_json(
            client,
            "/models/churn/invocations",
            {"dataframe_records": records()},
            headers={"X-Request-ID": request_id},
        )
        assert answer.headers["x-model-version"] == "3"
    deadline = _time.monotonic() + 10
    while _time.monotonic() < deadline and sum(c["role"] == "shadow" for c in sink.calls) < 20:
        _time.sleep(0.02)
    shadow = [c for c in sink.calls if c["role"] == "shadow"]
    primary = [c for c in sink.calls if c["role"] == "primary"]
    assert sorted(c["request_ids"] for c in shadow) == sorted(ids)
    assert {c["version"] for c in shadow} == {9}
    assert {c["version"] for c in primary} == {3}
    assert all(c["latency_ms"] is not None and c["latency_ms"] >= 0 for c in sink.calls)


def test_a_failed_prediction_is_logged_as_a_failure(models: Models) -> None:
    class Broken:
        def predict(self, frame: pd.DataFrame) -> np.ndarray:
            raise RuntimeError("boom")

    broken = LoadedVersion("churn", 5, "5" * 64, models.churn.signature, Broken())
    sink = RecordingSink()
    client = InProcessClient(create_app(StaticModelHost({"churn": broken}), prediction_log=sink))
    answer = post_json(client, "/models/churn/invocations", {"dataframe_records": records()})
    assert answer.status_code == 500
    assert [(c["version"], c.get("status")) for c in sink.calls] == [(5, 500)]


def test_labels_posted_by_request_id_land_in_the_feedback_log(
    host: StaticModelHost, tmp_path: Any
) -> None:
    from closedloop.storage.feedback import FeedbackLog

    log = FeedbackLog(str(tmp_path / "feedback"))
    client = InProcessClient(create_app(host, feedback_log=log))
    single = post_json(client, "/models/churn/feedback", {"request_id": "r1", "label": 1})
    assert single.status_code == 200
    assert single.json() == {"accepted": 1}
    batch = {"labels": [{"request_id": "r2", "label": 0}, {"request_id": "r3", "label": 1}]}
    assert post_json(client, "/models/churn/feedback", batch).json() == {"accepted": 2}
    stored = log.read("churn").sort_values("_request_id")
    assert stored["_request_id"].tolist() == ["r1", "r2", "r3"]
    assert stored["_label"].tolist() == [1, 0, 1]
    assert (
        post_json(client, "/models/nope/feedback", {"request_id": "r", "label": 1}).status_code
        == 404
    )
    bad = post_json(client, "/models/churn/feedback", {"labels": [{"label": 1}]})
    assert bad.status_code == 400
    assert "request_id" in bad.text


def test_feedback_takes_a_bare_array_of_labels(host: StaticModelHost, tmp_path: Any) -> None:
    from closedloop.storage.feedback import FeedbackLog

    log = FeedbackLog(str(tmp_path / "feedback"))
    client = InProcessClient(create_app(host, feedback_log=log))
    labels = [
        {"request_id": "r1", "row": 0, "label": 1},
        {"request_id": "r1", "row": 1, "label": 0},
        {"request_id": "r2", "row": 0, "label": 1},
    ]
    answer = post_json(client, "/models/churn/feedback", labels)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"accepted": 3}
    stored = log.read("churn").sort_values(["_request_id", "_row"])
    assert list(zip(stored["_request_id"], stored["_row"], stored["_label"], strict=True)) == [
        ("r1", 0, 1),
        ("r1", 1, 0),
        ("r2", 0, 1),
    ]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (
            [{"request_id": "r1", "row": 0, "label": i % 2} for i in range(609)],
            "labels 0 and 1 both name request 'r1' row 0",
        ),
        (
            {"labels": [{"request_id": "a", "label": 1}, {"request_id": "a", "label": 0}]},
            "labels 0 and 1 both name request 'a'",
        ),
        ([], "must be a non-empty array"),
        ({"labels": {"request_id": "a"}}, "'labels' must be a non-empty array"),
        ([{"request_id": 7, "label": 1}], "'request_id' must be a non-empty string"),
        ([{"request_id": "a", "row": -1, "label": 1}], "'row' must be an integer >= 0"),
        ("r1", "the feedback body must be"),
    ],
    ids=[
        "609 labels on row 0",
        "one request twice",
        "empty",
        "labels not an array",
        "id",
        "row",
        "string",
    ],
)
def test_feedback_refuses_a_batch_it_cannot_file_without_writing_it(
    host: StaticModelHost, tmp_path: Any, body: object, needle: str
) -> None:
    from closedloop.storage.feedback import FeedbackLog

    log = FeedbackLog(str(tmp_path / "feedback"))
    client = InProcessClient(create_app(host, feedback_log=log))
    answer = post_json(client, "/models/churn/feedback", body)
    assert answer.status_code == 400, answer.text
    assert needle in answer.json()["error"]["message"]
    assert log.read("churn").empty


def test_the_feedback_body_is_described_with_an_example(
    host: StaticModelHost, tmp_path: Any
) -> None:
    from closedloop.storage.feedback import FeedbackLog

    app = create_app(host, feedback_log=FeedbackLog(str(tmp_path / "feedback")))
    operation = app.openapi()["paths"]["/models/{name}/feedback"]["post"]
    assert "request_id" in operation["description"]
    content = operation["requestBody"]["content"]["application/json"]
    assert {"array", "object"} <= {s["type"] for s in content["schema"]["oneOf"]}
    assert content["example"][0]["request_id"]


def test_params_predict_proba_answers_every_class_probability(
    client: InProcessClient, host: StaticModelHost, models: Models, sink: RecordingSink
) -> None:
    body = {
        "dataframe_split": {"columns": COLUMNS, "data": rows()},
        "params": {"predict_method": "predict_proba"},
    }
    answer = post_json(client, "/invocations", body)
    assert answer.status_code == 200, answer.text
    want = models.churn.estimator.predict_proba(REQUEST[COLUMNS])
    assert np.asarray(answer.json()["predictions"]) == pytest.approx(want)
    assert list(sink.calls[-1]["labels"]) == expected(models)  # the log still holds labels
    plain = {**body, "params": {"predict_method": "predict"}}
    assert post_json(client, "/invocations", plain).json()["predictions"] == expected(models)


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"predict_method": "predict_log_proba"}, "one of ['predict', 'predict_proba']"),
        ({"temperature": 0.5}, "unknown param(s) ['temperature']"),
    ],
)
def test_params_the_server_does_not_know_are_refused(
    client: InProcessClient, sink: RecordingSink, params: dict[str, Any], needle: str
) -> None:
    answer = post_json(client, "/invocations", {"inputs": columnar(), "params": params})
    assert answer.status_code == 400
    assert needle in answer.json()["message"]
    assert "predict_method" in answer.json()["message"]
    assert sink.calls == []


def test_predict_proba_of_a_model_without_it_is_refused(
    client: InProcessClient, host: StaticModelHost, models: Models
) -> None:
    host.set("price", models.price)
    body = {"inputs": columnar(), "params": {"predict_method": "predict_proba"}}
    answer = post_json(client, "/models/price/invocations", body)
    assert answer.status_code == 400
    assert "has no predict_proba" in answer.json()["message"]
    assert "'price' version 1" in answer.json()["message"]
