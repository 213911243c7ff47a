"""Concurrent writers: registrations from several processes never collide or fail."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from tests.conftest import make_workspace
from tests.support import features, fit_model, loans

from closedloop.services import events, registry

PROCESSES = 4
PER_PROCESS = 5


def _register_many(
    folder: str, metadata_url: str, start: multiprocessing.synchronize.Event
) -> list[int]:
    ws = make_workspace(Path(folder), metadata_url)
    frame = loans(200)
    model = fit_model(frame)
    start.wait(30)
    numbers = [
        registry.register_version(ws, "churn", model, features(frame), actor="worker").number
        for _ in range(PER_PROCESS)
    ]
    ws.close()
    return numbers


def test_concurrent_registration_across_processes_numbers_every_version_once(
    tmp_path: Path, metadata_url: str
) -> None:
    ws = make_workspace(tmp_path, metadata_url)
    ws.metadata.ensure_schema()  # created once; workers then race on registration only
    context = multiprocessing.get_context("spawn")
    manager = context.Manager()
    start = manager.Event()
    with context.Pool(PROCESSES) as pool:
        pending = [
            pool.apply_async(_register_many, (str(tmp_path), metadata_url, start))
            for _ in range(PROCESSES)
        ]
        start.set()
        results = [p.get(timeout=240) for p in pending]
    manager.shutdown()
    every = sorted(n for numbers in results for n in numbers)
    assert every == list(range(1, PROCESSES * PER_PROCESS + 1))
    for numbers in results:  # each process saw its own numbers increase
        assert numbers == sorted(numbers)
    assert [v.number for v in registry.list_versions(ws, "churn")] == every
    registered = events.list_events(ws, model="churn", kinds=("version.registered",))
    assert sorted(e.version or 0 for e in registered) == every


def test_first_use_by_many_processes_creates_the_schema_once(tmp_path: Path, metadata_url: str):
    context = multiprocessing.get_context("spawn")
    manager = context.Manager()
    start = manager.Event()
    with context.Pool(3) as pool:
        pending = [
            pool.apply_async(_register_many, (str(tmp_path), metadata_url, start)) for _ in range(3)
        ]
        start.set()
        results = [p.get(timeout=240) for p in pending]
    manager.shutdown()
    assert sorted(n for r in results for n in r) == list(range(1, 3 * PER_PROCESS + 1))
