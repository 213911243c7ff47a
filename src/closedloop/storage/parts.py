"""Append-only Parquet "part" files on any fsspec filesystem, shared by the prediction log and
the feedback log.

A part is published atomically: on a local disk it is written under a hidden temporary name
(``.part-….tmp``, fsynced) and renamed into place; object stores (S3, GCS, Azure, memory) get
one PUT of the complete object; other filesystems get a temporary file and a move. Readers only
look at ``part-*.parquet`` names, so they never see a half-written file, and no part is
modified after it is written. No folder is made on object stores (a missing bucket is an error,
never created), and every storage failure is a :class:`~closedloop.errors.StoreError` naming the
folder, with a hint.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from closedloop.errors import ConfigError
from closedloop.storage.failures import storage_errors, store_failure

PART = re.compile(r"^part-[0-9TZ]+-[0-9a-f]{32}\.parquet$")
# Filesystems where one write call publishes a complete object atomically.
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "memory"})


def is_part(path: object) -> bool:
    """True for a published part file (not a temporary or foreign file)."""
    return bool(PART.match(str(path).rstrip("/").rsplit("/", 1)[-1]))


class PartFolder:
    """A root folder of part files at a local path or fsspec URL."""

    def __init__(self, root_url: str, storage_options: dict[str, Any] | None, *, what: str) -> None:
        from fsspec.core import url_to_fs

        try:
            fs, root = url_to_fs(str(root_url), **(storage_options or {}))
        except (ValueError, ImportError, TypeError) as exc:
            raise ConfigError(
                f"Cannot open the {what} at {str(root_url)!r}: {exc}",
                hint="Use a local folder or an fsspec URL whose driver is installed (s3fs …).",
            ) from exc
        self.fs = fs
        self.what = what
        self.root = str(root).rstrip("/")
        protocols = fs.protocol if isinstance(fs.protocol, tuple | list) else (fs.protocol,)
        self.local = "file" in protocols or "local" in protocols
        self.atomic_put = bool(OBJECT_STORES.intersection(protocols))

    def publish(self, folder: str, data: bytes) -> str:
        """Write ``data`` as a new part under ``folder``; returns its path."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        name = f"part-{stamp}-{uuid.uuid4().hex}.parquet"
        final = f"{folder}/{name}"
        temporary = f"{folder}/.{name}.tmp"
        try:
            with storage_errors(f"write to the {self.what} at", self.url_of(folder)):
                if self.local:
                    self._publish_local(folder, temporary, final, data)
                elif self.atomic_put:
                    self.fs.pipe_file(final, data)
                else:
                    self.fs.makedirs(folder, exist_ok=True)
                    self.fs.pipe_file(temporary, data)
                    self.fs.mv(temporary, final)
        except FileNotFoundError as exc:  # e.g. the bucket does not exist
            raise store_failure(f"write to the {self.what} at", self.url_of(folder), exc) from exc
        return final

    @staticmethod
    def _publish_local(folder: str, temporary: str, final: str, data: bytes) -> None:
        os.makedirs(folder, exist_ok=True)
        try:
            with open(temporary, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(temporary)
            raise

    def url_of(self, path: str) -> str:
        """``path`` as the user would write it (with its scheme on remote filesystems)."""
        return path if self.local else str(self.fs.unstrip_protocol(path))

    def entries(self, folder: str) -> list[str]:
        """The paths directly under ``folder``, sorted ([] when it does not exist)."""
        try:
            with storage_errors(f"list the {self.what} at", self.url_of(folder)):
                names = self.fs.ls(folder, detail=False)
        except FileNotFoundError:
            return []
        return sorted(str(name).rstrip("/") for name in names)

    def read(self, path: str) -> Any:
        """One part as a pyarrow Table (a storage failure is a StoreError; a damaged file raises
        pyarrow's error)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        with storage_errors(f"read the {self.what} at", self.url_of(path)):
            data = self.fs.cat_file(path)
        return pq.read_table(pa.BufferReader(data))
