"""Seeded benchmark data shared by ``drift_speed.py`` and ``drift_quality.py``.

Twenty numeric columns ``n00``..``n19`` of mixed shapes (normal, log-normal, uniform, rounded
integers with heavy ties, a bimodal mixture) and five string columns ``c0``..``c4`` (4 to 50
categories). The current window shifts exactly :data:`PLANTED` columns:

* ``n00``, ``n05``, ``n10``: mean shift of 0.5 standard deviations;
* ``n15``: scale multiplied by 1.5;  ``n19`` (integer, tied): mean shift of 0.5 sd;
* ``c0``, ``c3``: 15% of the probability mass moved to another category.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

N_NUMERIC = 20
N_CATEGORICAL = 5
NUMERIC = [f"n{j:02d}" for j in range(N_NUMERIC)]
CATEGORICAL = [f"c{j}" for j in range(N_CATEGORICAL)]
PLANTED = ["n00", "n05", "n10", "n15", "n19", "c0", "c3"]
_LEVELS = [4, 8, 12, 25, 50]
CHUNK_ROWS = 500_000


def _category_probs(j: int) -> np.ndarray:
    weights = 1.0 / np.arange(1, _LEVELS[j] + 1) ** 0.8  # Zipf-like
    probs: np.ndarray = weights / weights.sum()
    return probs


def _labels(j: int) -> np.ndarray:
    return np.array([f"c{j}_level_{k:02d}" for k in range(_LEVELS[j])], dtype=object)


def make_frame(
    rows: int, seed: int, *, drifted: bool = False, shifts: dict[str, float] | None = None
) -> pd.DataFrame:
    """One window of ``rows`` rows. ``drifted`` applies the planted shifts (module docstring);
    ``shifts`` adds ``{numeric column: mean shift in sd}`` or ``{categorical column: mass}``."""
    rng = np.random.default_rng(seed)
    data: dict[str, np.ndarray] = {}
    planted = (
        {
            "n00": 0.5,
            "n05": 0.5,
            "n10": 0.5,
            "n19": 0.5,
            "c0": 0.15,
            "c3": 0.15,
        }
        if drifted
        else {}
    )
    planted.update(shifts or {})
    for j, name in enumerate(NUMERIC):
        shape = j % 5
        shift = planted.get(name, 0.0)
        if name == "n19":  # rounded Poisson-ish integer with many ties, sd ~ 3
            values = np.round(rng.normal(10.0 + 3.0 * shift, 3.0, rows))
        elif shape == 0:
            values = rng.normal(shift, 1.0, rows)
        elif shape == 1:  # log-normal(0, 0.5): sd ~ 0.60
            values = rng.lognormal(0.0, 0.5, rows) + 0.6 * shift
        elif shape == 2:  # uniform(0, 1): sd ~ 0.289
            values = rng.random(rows) + 0.289 * shift
        elif shape == 3:  # integer 0..99, ties
            values = rng.integers(0, 100, rows).astype(np.float64) + round(28.9 * shift)
        else:  # bimodal mixture, sd ~ 2.2
            values = np.where(rng.random(rows) < 0.5, -2.0, 2.0) + rng.normal(0, 1, rows)
            values += 2.2 * shift
        if drifted and name == "n15":
            values = values * 1.5
        data[name] = values
    for j, name in enumerate(CATEGORICAL):
        probs = _category_probs(j).copy()
        moved = planted.get(name, 0.0)
        if moved:  # move `moved` of the mass from the top category to the last one
            take = min(moved, probs[0] * 0.99)
            probs[0] -= take
            probs[-1] += take
        codes = rng.choice(len(probs), size=rows, p=probs)
        data[name] = _labels(j)[codes]
    frame = pd.DataFrame(data)
    return frame


def iter_chunks(rows: int, seed: int, *, drifted: bool) -> Iterator[pd.DataFrame]:
    """``rows`` rows in chunks of at most :data:`CHUNK_ROWS` (bounded memory for 10M rows)."""
    done = 0
    part = 0
    while done < rows:
        size = min(CHUNK_ROWS, rows - done)
        yield make_frame(size, seed * 1_000_003 + part, drifted=drifted)
        done += size
        part += 1


def write_pair(folder: Path, rows: int, seed: int = 0) -> tuple[Path, Path]:
    """Write ``reference.parquet`` (no drift) and ``current.parquet`` (planted drift) once."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    paths = (folder / "reference.parquet", folder / "current.parquet")
    for path, drifted, offset in ((paths[0], False, 1), (paths[1], True, 2)):
        if path.exists():
            continue
        tmp = path.with_suffix(".tmp")
        writer = None
        for chunk in iter_chunks(rows, seed * 10 + offset, drifted=drifted):
            table = pa.Table.from_pandas(chunk, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table, row_group_size=256_000)
        assert writer is not None
        writer.close()
        tmp.rename(path)
    return paths
