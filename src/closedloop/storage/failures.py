"""Storage failures become :class:`~closedloop.errors.StoreError`: one line naming the store, with
a hint.

Filesystem drivers raise many things when storage cannot be used: ``OSError`` (local disks, and
s3fs's translation of most S3 answers), botocore's ``EndpointConnectionError`` or
``NoCredentialsError`` (not ``OSError``), aiohttp's client errors... :func:`is_storage_failure`
recognises them by their class (``OSError``) or by the package that defines them, without
importing optional drivers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from closedloop.errors import ClosedloopError, StoreError

DRIVER_PACKAGES = frozenset(
    {
        "botocore",
        "aiobotocore",
        "boto3",
        "s3fs",
        "aiohttp",
        "fsspec",
        "gcsfs",
        "google",
        "adlfs",
        "azure",
        "urllib3",
        "requests",
        "sqlalchemy",
        "psycopg",
        "psycopg2",
    }
)
"""Packages whose exceptions mean "the store cannot be reached or used"."""

MAX_DETAIL = 400


def is_storage_failure(exc: BaseException) -> bool:
    """True for errors raised by a filesystem, object store or database driver."""
    if isinstance(exc, ClosedloopError):
        return False
    if isinstance(exc, OSError):
        return True
    return any(
        str(getattr(kind, "__module__", "")).split(".")[0] in DRIVER_PACKAGES
        for kind in type(exc).__mro__
    )


def one_line(exc: BaseException) -> str:
    """The exception's message on one line, at most a few hundred characters (prefixed with its
    type when it is not a storage failure, whose messages say what happened)."""
    text = " ".join(str(exc).split())
    if not text or not is_storage_failure(exc):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 1] + "…"


def hint_for(url: str) -> str:
    """What to check when the store at ``url`` cannot be used."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else "file"
    if scheme in ("s3", "s3a"):
        return (
            "Check that the S3 endpoint is reachable (store.s3_endpoint_url, else "
            "AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL), that the bucket exists and that the "
            "credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE) are valid."
        )
    if scheme == "file":
        return "Check that the folder exists and is writable, and that the disk is not full."
    return f"Check that the {scheme}:// service is reachable and that its credentials are valid."


def store_failure(action: str, url: str, exc: BaseException) -> StoreError:
    """``Cannot <action> <url>: <reason>.`` as a StoreError with the hint for ``url``."""
    return StoreError(
        f"Cannot {action} {url}: {one_line(exc)}",
        hint=hint_for(url),
        details={"url": url},
    )


@contextmanager
def storage_errors(action: str, url: str) -> Iterator[None]:
    """Turn storage failures inside the block into one StoreError (``FileNotFoundError`` is
    left alone: callers decide what a missing file means)."""
    try:
        yield
    except FileNotFoundError:
        raise
    except Exception as exc:
        if is_storage_failure(exc):
            raise store_failure(action, url, exc) from exc
        raise
