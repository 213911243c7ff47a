"""Property-based fuzzing of the served OpenAPI document: no input makes the server answer 5xx."""

from __future__ import annotations

import tempfile

import numpy as np
import pandas as pd
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from sklearn.linear_model import LogisticRegression

from closedloop.domain.model import LoadedVersion
from closedloop.domain.signature import infer_signature
from closedloop.server import create_app
from closedloop.storage.feedback import FeedbackLog
from closedloop.testing.hosts import StaticModelHost


def _app():  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=100), "n": rng.integers(0, 5, size=100)})
    model = LogisticRegression().fit(frame, (frame["x"] > 0).astype(int))
    loaded = LoadedVersion("churn", 1, "0" * 64, infer_signature(frame), model)
    feedback = FeedbackLog(tempfile.mkdtemp(prefix="closedloop-fuzz-"))
    return create_app(StaticModelHost({"churn": loaded}), feedback_log=feedback)


schema = schemathesis.openapi.from_asgi("/openapi.json", _app())


def test_the_openapi_document_describes_both_protocols() -> None:
    paths = schema.raw_schema["paths"]
    assert "/v2/models/{name}/infer" in paths
    assert "/invocations" in paths
    assert "requestBody" in paths["/invocations"]["post"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@schema.parametrize()
@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_generated_request_gets_a_server_error(case: schemathesis.Case) -> None:
    if "name" in (case.path_parameters or {}):
        case.path_parameters["name"] = "churn"
    response = case.call()
    case.validate_response(response, checks=[not_a_server_error])
