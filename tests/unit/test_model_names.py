"""One rule for model names: the registry, the prediction log and the feedback log agree.

A name the registry accepted but the logs refused would serve with none of its predictions
logged; so every place that takes a model name checks the same rule.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from tests.conftest import make_workspace
from tests.support import features, fit_model, loans

from closedloop.errors import InvalidInputError
from closedloop.services import registry
from closedloop.storage.feedback import FeedbackLog
from closedloop.storage.names import is_model_name
from closedloop.storage.predictions import PredictionLog

GOOD = ["churn", "Loans-EU", "price_v2", "m.1", "7day", "a" * 128]
BAD = {
    "leading underscore": "_churn",
    "leading dot": ".hidden",
    "dots only": "..",
    "a path": "a/b",
    "too long": "a" * 129,
    "200 characters": "m" * 200,
    "non-ASCII": "prêt",
    "non-ASCII digit": "m\u0663",
    "trailing newline": "churn\n",
    "a space": "my model",
    "empty": "",
}


@pytest.mark.parametrize("name", GOOD)
def test_names_that_follow_the_rule(name: str) -> None:
    assert is_model_name(name)


@pytest.mark.parametrize("case", sorted(BAD))
def test_the_registry_and_both_logs_refuse_the_same_names(case: str, tmp_path: Path) -> None:
    name = BAD[case]
    assert not is_model_name(name)
    frame = loans(60)
    ws = make_workspace(tmp_path, f"sqlite:///{tmp_path / 'metadata.db'}")
    try:
        with pytest.raises(InvalidInputError, match="is not allowed: a model name is 1 to 128"):
            registry.register_version(ws, name, fit_model(frame), features(frame))
        assert registry.list_models(ws) == []
    finally:
        ws.close()
    with (
        PredictionLog(str(tmp_path / "predictions"), flush_interval=60) as log,
        pytest.raises(InvalidInputError, match="is not allowed"),
    ):
        log.append(name, 1, "r1", pd.DataFrame({"x": [1.0]}), pd.Series([0]).to_numpy(), None)
    with pytest.raises(InvalidInputError, match="is not allowed"):
        FeedbackLog(str(tmp_path / "feedback")).append(name, ["r1"], [1])
    assert not (tmp_path / "feedback").exists() or list((tmp_path / "feedback").iterdir()) == []


def test_the_error_names_the_rule_and_suggests_a_name(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError) as refused:
        FeedbackLog(str(tmp_path)).append("m" * 200, ["r1"], [1])
    assert refused.value.message == (
        f"model name {'m' * 60!r} is not allowed: a model name is 1 to 128 ASCII letters, "
        "digits, '.', '_' or '-', starting with a letter or digit"
    )
    assert refused.value.hint is not None and "'churn'" in refused.value.hint
