"""The artifact store: content-addressed, verified on every read, on a folder or S3."""

from __future__ import annotations

from pathlib import Path

import pytest

from closedloop.errors import IntegrityError, NotFoundError, StoreError
from closedloop.storage.artifacts import MARKER, ArtifactStore, sha256_bytes


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


def _buckets(endpoint: str) -> list[str]:
    import boto3

    return [b["Name"] for b in boto3.client("s3", endpoint_url=endpoint).list_buckets()["Buckets"]]


def test_a_missing_bucket_is_refused_and_never_created(s3_bucket: str, s3_endpoint: str) -> None:
    typo = f"{s3_bucket}-typo"
    store = ArtifactStore(f"s3://{typo}/artifacts")
    with pytest.raises(StoreError, match="does not exist") as caught:
        store.check_location()
    assert typo in caught.value.message and s3_endpoint in caught.value.message
    assert "never creates buckets" in (caught.value.hint or "")
    with pytest.raises(StoreError, match=f"s3://{typo}/artifacts"):
        store.put(b"would have created the bucket")
    assert typo not in _buckets(s3_endpoint)


def test_an_unreachable_endpoint_is_a_store_error_naming_the_store_and_the_variable(
    s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    store = ArtifactStore(f"s3://{s3_bucket}/artifacts")
    for call in (store.check_location, lambda: store.get(sha256_bytes(b"x"))):
        with pytest.raises(StoreError, match=f"s3://{s3_bucket}/artifacts") as caught:
            call()
        assert "\n" not in caught.value.message
        assert "AWS_ENDPOINT_URL" in (caught.value.hint or "")


def test_a_new_store_is_marked_with_its_metadata_store(s3_bucket: str) -> None:
    store = ArtifactStore(f"s3://{s3_bucket}/artifacts")
    store.check_pairing("id-1", "sqlite:///one.db", None)
    assert store.read_marker() == {
        **(store.read_marker() or {}),
        "store_id": "id-1",
        "metadata_url": "sqlite:///one.db",
    }
    store.check_pairing("id-1", "sqlite:///one.db", None)  # its own store: accepted
    with pytest.raises(StoreError, match="belongs to another metadata store") as caught:
        store.check_pairing("id-2", "sqlite:///two.db", None)
    assert "sqlite:///one.db" in caught.value.message
    assert "sqlite:///two.db" in caught.value.message


def test_an_unmarked_store_is_adopted_only_when_it_holds_the_recorded_artifact(
    tmp_path: Path,
) -> None:
    store = ArtifactStore(str(tmp_path / "old"))
    digest = store.put(b"a model written before markers existed")
    assert store.read_marker() is None
    with pytest.raises(StoreError, match="does not hold the artifacts"):
        store.check_pairing("id-1", "sqlite:///one.db", sha256_bytes(b"another model"))
    with pytest.raises(StoreError, match="already holds artifacts"):
        store.check_pairing("id-1", "sqlite:///one.db", None)
    assert store.read_marker() is None  # nothing adopted by a refusal
    store.check_pairing("id-1", "sqlite:///one.db", digest)
    assert (store.read_marker() or {})["store_id"] == "id-1"
    assert (tmp_path / "old" / MARKER).is_file()


def test_an_empty_unmarked_store_is_refused_when_the_metadata_records_artifacts(
    tmp_path: Path,
) -> None:
    store = ArtifactStore(str(tmp_path / "misspelt"))
    with pytest.raises(StoreError, match="does not hold the artifacts") as caught:
        store.check_pairing("id-1", "sqlite:///one.db", sha256_bytes(b"model"))
    assert "sqlite:///one.db" in (caught.value.hint or "")
