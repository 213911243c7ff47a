"""Sticky traffic splitting: each caller keeps its side of a canary split."""

from __future__ import annotations

import hashlib


def bucket(model: str, key: str) -> float:
    """A caller's fixed position in [0, 1) for ``model``: the same key always lands the same.

    A canary at weight ``w`` answers exactly the keys with ``bucket < w``, so raising the weight
    only moves callers from production to the canary, never back and forth.
    """
    digest = hashlib.blake2b(f"{model}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64
