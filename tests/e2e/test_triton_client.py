"""NVIDIA's Triton HTTP client, used as its documentation shows, against `closedloop serve`."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as triton
from tests.e2e.conftest import Served
from tritonclient.utils import InferenceServerException

DATATYPES = {"f": "FP64", "i": "INT64", "O": "BYTES", "b": "BOOL"}


def _inputs(served: Served, rows: int, *, binary: bool) -> list[triton.InferInput]:
    frame = served.rows.head(rows)
    inputs = []
    for name in frame.columns:
        values = frame[name].to_numpy()
        if values.dtype.kind not in "fib":
            values = values.astype(object)
        tensor = triton.InferInput(name, [rows], DATATYPES[values.dtype.kind])
        tensor.set_data_from_numpy(values, binary_data=binary)
        inputs.append(tensor)
    return inputs


@pytest.fixture
def client(served: Served) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url=served.url.removeprefix("http://"))


def test_health_and_metadata_through_the_triton_client(client, served: Served) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("loans")
    assert client.get_server_metadata()["name"] == "closedloop"
    metadata = client.get_model_metadata("loans")
    assert [i["name"] for i in metadata["inputs"]] == list(served.rows.columns)
    assert [o["name"] for o in metadata["outputs"]] == ["predict", "predict_proba"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary-tensors", "json-tensors"])
def test_infer_with_the_clients_defaults_matches_the_http_json_answer(
    client, served: Served, binary: bool
) -> None:
    result = client.infer("loans", _inputs(served, 5, binary=binary))
    labels = result.as_numpy("predict")
    scores = result.as_numpy("predict_proba")
    response = result.get_response()
    assert response["model_version"] == "1"
    assert labels.shape == (5,)
    assert np.all((scores >= 0) & (scores <= 1))
    assert labels.tolist() == (scores > 0.5).astype(int).tolist()


def test_requested_outputs_in_binary_and_json(client, served: Served) -> None:
    outputs = [
        triton.InferRequestedOutput("predict", binary_data=True),
        triton.InferRequestedOutput("predict_proba", binary_data=False),
    ]
    result = client.infer("loans", _inputs(served, 3, binary=True), outputs=outputs)
    assert result.as_numpy("predict").shape == (3,)
    assert result.as_numpy("predict_proba").shape == (3,)


def test_a_bad_request_raises_the_clients_error_with_the_column(client, served: Served) -> None:
    inputs = _inputs(served, 2, binary=True)[1:]  # the first column is missing
    with pytest.raises(InferenceServerException, match="income"):
        client.infer("loans", inputs)
