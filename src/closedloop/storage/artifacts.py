"""The artifact store: content-addressed blobs on any fsspec filesystem.

A blob is stored once under ``objects/<aa>/<sha256>`` and named by its sha256. Every read hashes
what it got and refuses content whose hash differs (a tampered or truncated file is never
returned). Writes go to a temporary name first and are moved into place, so a reader never sees a
partial blob and a crash leaves nothing half-written under the final name.

The store never creates a bucket: an object store's bucket (or container) must exist. Its root
holds a marker, ``closedloop-store.json``, naming the metadata store it belongs to (see
:meth:`ArtifactStore.check_pairing`), so that a misspelt URL or a store paired with another
metadata database is refused before anything is read or written. Every failure of the
filesystem is a :class:`~closedloop.errors.StoreError` naming the store, with a hint.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from closedloop.errors import ConfigError, IntegrityError, NotFoundError, StoreError
from closedloop.storage.failures import storage_errors, store_failure
from closedloop.storage.parts import OBJECT_STORES

MARKER = "closedloop-store.json"
"""The object at the artifact store's root naming the metadata store it belongs to."""
PROBE_CONFIG = {"retries": {"max_attempts": 2, "mode": "standard"}}
"""botocore settings of the one check made when an S3 store is opened: a down endpoint fails in
a second or two instead of after botocore's default retries (later calls keep the defaults)."""


def sha256_bytes(data: bytes) -> str:
    """The hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


class ArtifactStore:
    """Content-addressed, verified blob storage at a local folder or fsspec URL."""

    def __init__(self, url: str, *, storage_options: dict[str, Any] | None = None) -> None:
        import fsspec

        self.url = url.rstrip("/")
        try:
            # A filesystem of its own: a cached one could hold a client made for another
            # endpoint (botocore reads AWS_ENDPOINT_URL when the client is made).
            options = {"skip_instance_cache": True, **(storage_options or {})}
            self.fs, self.root = fsspec.core.url_to_fs(self.url, **options)
        except (ImportError, ValueError) as exc:
            raise ConfigError(
                f"Cannot open the artifact store {url!r}: {exc}.",
                hint="For s3:// URLs, pip install 'closedloop[s3]'.",
            ) from exc
        self.root = self.root.rstrip("/")
        protocols = self.fs.protocol
        protocols = protocols if isinstance(protocols, tuple | list) else (protocols,)
        self.object_store = bool(OBJECT_STORES.intersection(protocols))
        self.s3 = bool({"s3", "s3a"}.intersection(protocols))

    def _path(self, sha256: str) -> str:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise NotFoundError(f"{sha256!r} is not a sha256 digest (64 lowercase hex characters).")
        return f"{self.root}/objects/{sha256[:2]}/{sha256}"

    def put(self, data: bytes) -> str:
        """Store ``data`` (idempotent) and return its sha256."""
        digest = sha256_bytes(data)
        path = self._path(digest)
        try:
            with storage_errors("write to the artifact store", self.url):
                if self.fs.exists(path) and self.fs.size(path) == len(data):
                    return digest
                if not self.object_store:  # object stores have no folders (and s3fs's
                    # makedirs would create a missing bucket)
                    self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
                tmp = f"{path}.tmp-{uuid.uuid4().hex}"
                with self.fs.open(tmp, "wb") as fh:
                    fh.write(data)
                self.fs.mv(tmp, path)
        except FileNotFoundError as exc:  # the folder or bucket went away
            raise store_failure("write to the artifact store", self.url, exc) from exc
        return digest

    def get(self, sha256: str) -> bytes:
        """The blob named ``sha256``, verified; IntegrityError if its content does not match."""
        path = self._path(sha256)
        try:
            with (
                storage_errors("read from the artifact store", self.url),
                self.fs.open(path, "rb") as fh,
            ):
                data: bytes = fh.read()
        except FileNotFoundError as exc:
            raise NotFoundError(
                f"Artifact {sha256} is missing from {self.url}.",
                hint="The artifact store may have been changed by hand; restore it from backup.",
            ) from exc
        actual = sha256_bytes(data)
        if actual != sha256:
            raise IntegrityError(
                f"Artifact {sha256} failed verification: its content hashes to {actual} "
                f"({len(data)} bytes). It was modified or truncated and will not be loaded.",
                hint="Restore the artifact from backup or register the version again.",
                details={"expected_sha256": sha256, "actual_sha256": actual, "path": path},
            )
        return data

    def exists(self, sha256: str) -> bool:
        path = self._path(sha256)
        with storage_errors("read from the artifact store", self.url):
            return bool(self.fs.exists(path))

    def path_of(self, sha256: str) -> str:
        """Where the blob lives (for operators and tests)."""
        return self._path(sha256)

    # -- the marker: which metadata store this artifact store belongs to ---------------------

    def check_location(self) -> None:
        """Refuse an object store whose bucket does not exist, or that cannot be reached (one
        quick request; closedloop never creates a bucket). Local folders are created on use."""
        if not self.object_store or self.fs.protocol in ("memory", ("memory",)):
            return  # folders, and the in-memory filesystem, have no buckets
        bucket = self.root.split("/", 1)[0]
        where = ""
        try:
            if self.s3:
                import fsspec

                options = dict(self.fs.storage_options)
                options.pop("skip_instance_cache", None)
                config = {**options.pop("config_kwargs", {}), **PROBE_CONFIG}
                probe = fsspec.filesystem(
                    "s3", config_kwargs=config, skip_instance_cache=True, **options
                )
                probe.connect()
                where = f" at {probe.s3.meta.endpoint_url}"
                probe.call_s3("head_bucket", Bucket=bucket)
            else:
                self.fs.info(bucket)
        except FileNotFoundError as exc:
            raise StoreError(
                f"The artifact store {self.url} does not exist: there is no bucket {bucket!r}"
                f"{where}.",
                hint="Fix store.artifacts_url if it is misspelt, or create the bucket first "
                "(closedloop never creates buckets).",
                details={"url": self.url, "bucket": bucket},
            ) from exc
        except Exception as exc:
            if isinstance(exc, StoreError):
                raise
            raise store_failure("reach the artifact store", self.url, exc) from exc

    def read_marker(self) -> dict[str, Any] | None:
        """The marker's content, or None when the store has none."""
        path = f"{self.root}/{MARKER}"
        try:
            with storage_errors("read from the artifact store", self.url):
                raw = self.fs.cat_file(path)
        except FileNotFoundError:
            return None
        try:
            marker = json.loads(raw)
            if not isinstance(marker, dict) or not isinstance(marker.get("store_id"), str):
                raise ValueError("no store_id")
        except ValueError as exc:
            raise StoreError(
                f"The marker {MARKER} of the artifact store {self.url} is damaged ({exc}).",
                hint="Restore it from backup, or delete it to let closedloop write it again "
                "(only if this artifact store belongs to your metadata store).",
            ) from exc
        return marker

    def write_marker(self, store_id: str, metadata_url: str) -> None:
        """Record that this artifact store belongs to the metadata store ``store_id``."""
        body = {
            "format": 1,
            "store_id": store_id,
            "metadata_url": metadata_url,
            "created_at": datetime.now(UTC).isoformat(),
        }
        data = json.dumps(body, indent=2, sort_keys=True).encode()
        try:
            with storage_errors("write to the artifact store", self.url):
                path = f"{self.root}/{MARKER}"
                if self.object_store:  # one PUT publishes the whole object
                    self.fs.pipe_file(path, data)
                else:  # readers in other processes never see a partial marker
                    self.fs.makedirs(self.root, exist_ok=True)
                    temporary = f"{path}.tmp-{uuid.uuid4().hex}"
                    self.fs.pipe_file(temporary, data)
                    self.fs.mv(temporary, path)
        except FileNotFoundError as exc:
            raise store_failure("write to the artifact store", self.url, exc) from exc

    def has_objects(self) -> bool:
        """Whether any blob has been stored here."""
        try:
            with storage_errors("read from the artifact store", self.url):
                return bool(self.fs.ls(f"{self.root}/objects", detail=False))
        except FileNotFoundError:
            return False

    def check_pairing(self, store_id: str, metadata_url: str, expected: str | None) -> None:
        """Refuse this artifact store unless it belongs to the metadata store ``store_id``.

        ``expected`` is the sha256 of an artifact the metadata store references (None when it
        references none yet). The rule:

        - a marker naming ``store_id``: accepted;
        - a marker naming another store: refused;
        - no marker (a new store, or one written before markers existed): the marker is written
          when the store holds ``expected``, or when it is empty and ``expected`` is None;
          otherwise refused (a misspelt URL, or a store that belongs elsewhere).
        """
        self.check_location()
        marker = self.read_marker()
        pair_hint = (
            f"Point store.artifacts_url and store.metadata_url at the artifact store and "
            f"metadata store that were created together (artifacts: {self.url}; metadata: "
            f"{metadata_url})."
        )
        if marker is not None:
            if marker["store_id"] == store_id:
                return
            raise StoreError(
                f"The artifact store {self.url} belongs to another metadata store "
                f"({marker.get('metadata_url', '?')}, store id {marker['store_id']}), not to "
                f"{metadata_url} (store id {store_id}).",
                hint=pair_hint,
                details={"artifacts_url": self.url, "metadata_url": metadata_url},
            )
        if expected is not None:
            if not self.exists(expected):
                raise StoreError(
                    f"The artifact store {self.url} does not hold the artifacts recorded in the "
                    f"metadata store {metadata_url} (it has no {MARKER}, and artifact "
                    f"{expected[:12]}… is not there).",
                    hint="Check store.artifacts_url for a typo. " + pair_hint,
                    details={"artifacts_url": self.url, "metadata_url": metadata_url},
                )
        elif self.has_objects():
            raise StoreError(
                f"The artifact store {self.url} already holds artifacts but no {MARKER}, and "
                f"the metadata store {metadata_url} records none: they were not created together.",
                hint=pair_hint,
                details={"artifacts_url": self.url, "metadata_url": metadata_url},
            )
        self.write_marker(store_id, metadata_url)


__all__ = ["MARKER", "ArtifactStore", "sha256_bytes"]
