"""RegistryModelHost answers by number only for the versions in the serving plan, and keeps at
most a few versions loaded for callers allowed outside it."""

from __future__ import annotations

import pytest
from tests.support import features, fit_model, loans

from closedloop.errors import NotFoundError
from closedloop.services import registry, serving
from closedloop.services.serving import RegistryModelHost
from closedloop.services.workspace import Workspace


@pytest.fixture
def host(ws: Workspace) -> RegistryModelHost:
    frame = loans(300)
    for _ in range(3):
        registry.register_version(ws, "loans", fit_model(frame), features(frame))
    registry.set_alias(ws, "loans", "production", 1)
    host = RegistryModelHost(ws)
    host.sync()
    return host


def test_only_the_serving_plan_answers_by_number(host: RegistryModelHost) -> None:
    assert host.get_version("loans", 1).version == 1
    with pytest.raises(NotFoundError) as refused:
        host.get_version("loans", 2)
    assert "not in its serving plan (production v1)" in refused.value.message
    assert refused.value.details == {"model": "loans", "version": 2, "plan": {"production": 1}}


def test_versions_loaded_on_demand_are_few_and_the_least_recently_used_go_first(
    host: RegistryModelHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serving, "ON_DEMAND_VERSIONS", 1)
    second = host.load_version("loans", 2)
    assert host.load_version("loans", 2) is second  # kept
    assert host.load_version("loans", 3).version == 3  # evicts version 2
    assert host.load_version("loans", 2) is not second  # loaded again
    with pytest.raises(NotFoundError):
        host.load_version("loans", 9)
