"""Canary and shadow rollouts against a real `closedloop serve` process on loopback."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
import pandas as pd
from tests.e2e.conftest import Served

from closedloop.services import registry, rollout


def _body(rows: pd.DataFrame) -> dict[str, object]:
    return {
        "dataframe_split": {
            "columns": list(rows.columns),
            "data": rows.astype(object).values.tolist(),
        }
    }


def _send(served: Served, keys: list[str], rows: pd.DataFrame) -> list[str]:
    """One request per routing key (four connections at once); the answering version of each."""
    bodies = [_body(rows.iloc[[i % len(rows)]]) for i in range(len(keys))]

    def part(start: int) -> list[str]:
        out = []
        with httpx.Client(base_url=served.url, timeout=10) as client:
            for i in range(start, len(keys), 4):
                answer = client.post(
                    "/invocations",
                    json=bodies[i],
                    headers={"X-Routing-Key": keys[i], "X-Request-ID": f"req-{keys[i]}"},
                )
                assert answer.status_code == 200, answer.text
                out.append(answer.headers["x-model-version"])
        return out

    with ThreadPoolExecutor(4) as pool:
        parts = list(pool.map(part, range(4)))
    versions = [""] * len(keys)
    for start, found in enumerate(parts):
        versions[start::4] = found
    return versions


def _wait_for_plan(served: Served, keys: list[str], expect_canary: bool) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        seen = set(_send(served, keys, served.rows))
        if ("2" in seen) == expect_canary:
            return
        time.sleep(0.1)
    raise AssertionError("the server did not follow the rollout plan")


def test_a_ten_percent_canary_gets_its_share_sticks_per_caller_and_a_breach_aborts_it(
    served: Served,
) -> None:
    # v2 is a model trained on inverted labels: its predictions diverge from production's.
    rollout.start_canary(
        served.ws, "loans", 2, weight=0.1, step_duration=timedelta(seconds=1), reason="test"
    )
    _wait_for_plan(served, [f"probe-{i}" for i in range(60)], expect_canary=True)
    keys = [f"user-{i}" for i in range(2000)]
    versions = _send(served, keys, served.rows)
    share = versions.count("2") / len(versions)
    assert 0.075 < share < 0.125  # 10 % ± ~3.7 standard errors of 2,000 callers
    assert _send(served, keys[:300], served.rows) == versions[:300]  # sticky per caller

    time.sleep(0.6)  # the server flushes its prediction log every 0.2 s here
    verdict = rollout.evaluate(served.ws, "loans", actor="test")
    assert verdict["verdict"]["action"] == "abort", verdict
    assert registry.resolve_alias(served.ws, "loans", "production") == 1
    assert registry.resolve_alias(served.ws, "loans", "canary") is None
    _wait_for_plan(served, keys[:200], expect_canary=False)
    assert set(_send(served, keys[:300], served.rows)) == {"1"}  # production restored


def test_a_shadow_answers_every_request_in_the_log_and_never_to_the_caller(
    served: Served,
) -> None:
    rollout.start_shadow(served.ws, "loans", 2, reason="test")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # until the server has loaded the shadow
        _send(served, ["warm"], served.rows)
        time.sleep(0.2)
        log = served.ws.prediction_log()
        try:
            if (log.read("loans", version=2)["_role"] == "shadow").any():
                break
        finally:
            log.close()
    keys = [f"caller-{i}" for i in range(50)]
    assert set(_send(served, keys, served.rows)) == {"1"}
    time.sleep(1.0)
    log = served.ws.prediction_log()
    try:
        logged = log.read("loans")
    finally:
        log.close()
    ours = logged[logged["_request_id"].isin([f"req-{k}" for k in keys])]
    primary = ours[ours["_role"] == "primary"]
    shadow = ours[ours["_role"] == "shadow"]
    assert sorted(primary["_request_id"]) == sorted(f"req-{k}" for k in keys)
    assert sorted(shadow["_request_id"]) == sorted(f"req-{k}" for k in keys)
    assert set(primary["_version"]) == {1}
    assert set(shadow["_version"]) == {2}
    # the shadow (inverted labels) disagrees with production on the same requests
    joined = primary.merge(shadow, on="_request_id", suffixes=("_p", "_s"))
    assert (joined["_prediction_p"] != joined["_prediction_s"]).mean() > 0.5
