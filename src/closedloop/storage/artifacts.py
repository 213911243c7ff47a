"""The artifact store: content-addressed blobs on any fsspec filesystem.

A blob is stored once under ``objects/<aa>/<sha256>`` and named by its sha256. Every read hashes
what it got and refuses content whose hash differs (a tampered or truncated file is never
returned). Writes go to a temporary name first and are moved into place, so a reader never sees a
partial blob and a crash leaves nothing half-written under the final name.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from closedloop.errors import ConfigError, IntegrityError, NotFoundError, StoreError


def sha256_bytes(data: bytes) -> str:
    """The hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


class ArtifactStore:
    """Content-addressed, verified blob storage at a local folder or fsspec URL."""

    def __init__(self, url: str, *, storage_options: dict[str, Any] | None = None) -> None:
        import fsspec

        self.url = url.rstrip("/")
        try:
            self.fs, self.root = fsspec.core.url_to_fs(self.url, **(storage_options or {}))
        except (ImportError, ValueError) as exc:
            raise ConfigError(
                f"Cannot open the artifact store {url!r}: {exc}.",
                hint="For s3:// URLs, pip install 'closedloop[s3]'.",
            ) from exc
        self.root = self.root.rstrip("/")

    def _path(self, sha256: str) -> str:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise NotFoundError(f"{sha256!r} is not a sha256 digest (64 lowercase hex characters).")
        return f"{self.root}/objects/{sha256[:2]}/{sha256}"

    def put(self, data: bytes) -> str:
        """Store ``data`` (idempotent) and return its sha256."""
        digest = sha256_bytes(data)
        path = self._path(digest)
        try:
            if self.fs.exists(path) and self.fs.size(path) == len(data):
                return digest
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            tmp = f"{path}.tmp-{uuid.uuid4().hex}"
            with self.fs.open(tmp, "wb") as fh:
                fh.write(data)
            self.fs.mv(tmp, path)
        except OSError as exc:
            raise StoreError(
                f"Cannot write to the artifact store {self.url}: {exc}.",
                hint="Check the folder's permissions and free space, or the bucket's credentials.",
            ) from exc
        return digest

    def get(self, sha256: str) -> bytes:
        """The blob named ``sha256``, verified; IntegrityError if its content does not match."""
        path = self._path(sha256)
        try:
            with self.fs.open(path, "rb") as fh:
                data: bytes = fh.read()
        except FileNotFoundError as exc:
            raise NotFoundError(
                f"Artifact {sha256} is missing from {self.url}.",
                hint="The artifact store may have been changed by hand; restore it from backup.",
            ) from exc
        except OSError as exc:
            raise StoreError(f"Cannot read from the artifact store {self.url}: {exc}.") from exc
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
        return bool(self.fs.exists(self._path(sha256)))

    def path_of(self, sha256: str) -> str:
        """Where the blob lives (for operators and tests)."""
        return self._path(sha256)
