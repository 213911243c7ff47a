"""The artifact store: content-addressed, verified on every read, on a folder or S3."""

from __future__ import annotations

from pathlib import Path

import pytest

from closedloop.errors import IntegrityError, NotFoundError
from closedloop.storage.artifacts import ArtifactStore, sha256_bytes


def test_a_blob_is_named_by_its_sha256_and_stored_once(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path))
    digest = store.put(b"model bytes")
    assert digest == sha256_bytes(b"model bytes")
    assert store.put(b"model bytes") == digest
    assert store.get(digest) == b"model bytes"
    assert len(list((tmp_path / "objects").rglob("*"))) == 2  # one folder, one file


def test_a_tampered_artifact_is_refused(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path))
    digest = store.put(b"the real model")
    Path(store.path_of(digest)).write_bytes(b"the evil model")
    with pytest.raises(IntegrityError, match="failed verification") as caught:
        store.get(digest)
    assert caught.value.details["expected_sha256"] == digest


def test_a_truncated_artifact_is_refused(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path))
    digest = store.put(b"x" * 1000)
    path = Path(store.path_of(digest))
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(IntegrityError, match="500 bytes"):
        store.get(digest)


def test_a_missing_artifact_is_not_found(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path))
    with pytest.raises(NotFoundError, match="missing"):
        store.get(sha256_bytes(b"never stored"))
    with pytest.raises(NotFoundError, match="not a sha256"):
        store.get("../../etc/passwd")


def test_the_same_store_works_on_an_s3_api(s3_bucket: str) -> None:
    store = ArtifactStore(f"s3://{s3_bucket}/artifacts")
    digest = store.put(b"on s3")
    assert store.get(digest) == b"on s3"
    assert store.exists(digest)
    store.fs.pipe(store.path_of(digest), b"tampered")
    with pytest.raises(IntegrityError):
        store.get(digest)
