"""Specification of closedloop.storage.datafiles.read_table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from closedloop.errors import InvalidInputError, SchemaError
from closedloop.storage.datafiles import read_table

FRAME = pd.DataFrame({"a": [1, 2, 3], "b": [0.5, 1.5, None], "c": ["x", "y", "z"]})


@pytest.mark.parametrize("name", ["data.parquet", "data.pq", "DATA.PARQUET"])
def test_reads_parquet_files(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    FRAME.to_parquet(path)
    pd.testing.assert_frame_equal(read_table(path), FRAME)


def test_reads_csv_files_from_a_string_path(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    FRAME.to_csv(path, index=False)
    pd.testing.assert_frame_equal(read_table(str(path)), FRAME)


@pytest.mark.parametrize("name", ["data.parquet", "data.csv"])
def test_columns_selects_and_orders_columns(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    FRAME.to_parquet(path) if name.endswith("parquet") else FRAME.to_csv(path, index=False)
    frame = read_table(path, columns=["c", "a"])
    assert list(frame.columns) == ["c", "a"]
    assert frame["a"].tolist() == [1, 2, 3]


@pytest.mark.parametrize("name", ["data.parquet", "data.csv"])
def test_requested_columns_that_are_absent_raise_schema_error_naming_them(
    tmp_path: Path, name: str
) -> None:
    path = tmp_path / name
    FRAME.to_parquet(path) if name.endswith("parquet") else FRAME.to_csv(path, index=False)
    with pytest.raises(SchemaError, match="'nope'") as info:
        read_table(path, columns=["a", "nope"])
    assert str(path) in info.value.message


def test_missing_file_raises_invalid_input_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "absent.csv"
    with pytest.raises(InvalidInputError, match="does not exist") as info:
        read_table(path)
    assert str(path) in info.value.message


def test_a_directory_is_not_a_file(tmp_path: Path) -> None:
    path = tmp_path / "dir.parquet"
    path.mkdir()
    with pytest.raises(InvalidInputError, match="directory"):
        read_table(path)


def test_unknown_extension_lists_the_accepted_ones(tmp_path: Path) -> None:
    path = tmp_path / "data.xlsx"
    path.write_text("a\n1\n")
    with pytest.raises(InvalidInputError) as info:
        read_table(path)
    message = info.value.message
    assert "'.xlsx'" in message
    assert all(ext in message for ext in (".parquet", ".pq", ".csv"))


@pytest.mark.parametrize("name", ["empty.parquet", "empty.csv"])
def test_an_empty_file_raises_invalid_input(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"")
    with pytest.raises(InvalidInputError, match="empty"):
        read_table(path)


def test_a_blank_csv_raises_invalid_input(tmp_path: Path) -> None:
    path = tmp_path / "blank.csv"
    path.write_text("\n\n")
    with pytest.raises(InvalidInputError, match="no header or data"):
        read_table(path)


def test_a_corrupt_parquet_file_raises_invalid_input(tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"this is not parquet at all")
    with pytest.raises(InvalidInputError, match="not a readable Parquet file"):
        read_table(path)
    with pytest.raises(InvalidInputError, match="not a readable Parquet file"):
        read_table(path, columns=["a"])


def test_an_undecodable_csv_raises_invalid_input(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(b"a,b\n\xff\xfe\xfa,1\n")
    with pytest.raises(InvalidInputError, match="not a readable CSV file"):
        read_table(path)


def test_a_malformed_csv_raises_invalid_input(tmp_path: Path) -> None:
    path = tmp_path / "ragged.csv"
    path.write_text('a,b\n1,2\n3,4,5,6\n"unterminated\n')
    with pytest.raises(InvalidInputError, match="not a readable CSV file"):
        read_table(path)


def test_iter_batches_streams_parquet_and_csv_in_bounded_batches(tmp_path: Path) -> None:
    from closedloop.storage.datafiles import iter_batches

    frame = pd.DataFrame({"a": range(10_000), "b": [f"s{i % 7}" for i in range(10_000)]})
    frame.to_parquet(tmp_path / "f.parquet", row_group_size=3_000)
    frame.to_csv(tmp_path / "f.csv", index=False)
    for name in ("f.parquet", "f.csv"):
        batches = list(iter_batches(tmp_path / name, ["b", "a"], batch_rows=1_000))
        assert max(b.num_rows for b in batches) <= 1_000
        assert sum(b.num_rows for b in batches) == 10_000
        assert batches[0].schema.names == ["b", "a"]
    with pytest.raises(SchemaError, match="nope"):
        list(iter_batches(tmp_path / "f.parquet", ["nope"]))


def test_strings_as_categories_reads_parquet_text_as_category(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0], "b": ["x", None]})
    frame.to_parquet(tmp_path / "f.parquet")
    read = read_table(tmp_path / "f.parquet", strings_as_categories=True)
    assert isinstance(read["b"].dtype, pd.CategoricalDtype)
    assert read["b"].isna().tolist() == [False, True]
    assert read["a"].tolist() == [1.0, 2.0]


def test_open_batches_recuts_csv_blocks_into_batches_of_exactly_batch_rows(
    tmp_path: Path,
) -> None:
    """A CSV file is parsed in 4 MiB blocks; batches span their boundaries."""
    from closedloop.storage.datafiles import open_batches

    rows = 300_000
    frame = pd.DataFrame({"n": range(rows), "s": ["a fairly long text value"] * rows})
    path = tmp_path / "blocks.csv"
    frame.to_csv(path, index=False)
    assert path.stat().st_size > 2 * (1 << 22)  # three blocks or more
    source = open_batches(path, 120_000)
    try:
        batches = list(source)
    finally:
        source.close()
    assert source.total_rows is None  # a CSV file does not say
    assert [b.num_rows for b in batches] == [120_000, 120_000, 60_000]
    numbers = [v for b in batches for v in b.column("n").to_pylist()]
    assert numbers == list(range(rows))


def test_an_aborted_atomic_write_leaves_no_file(tmp_path: Path) -> None:
    import pyarrow as pa

    from closedloop.storage.datafiles import AtomicTableWriter

    batch = pa.record_batch({"n": [1, 2, 3]})
    with pytest.raises(RuntimeError), AtomicTableWriter(tmp_path / "out.csv", batch.schema) as w:
        w.write(batch)
        raise RuntimeError("the third batch failed")
    assert list(tmp_path.iterdir()) == []
    writer = AtomicTableWriter(tmp_path / "out.csv", batch.schema)
    writer.write(batch)
    (hidden,) = tmp_path.iterdir()
    assert hidden.name.startswith(".out.csv.")  # a hidden name until committed
    writer.commit()
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]
    assert pd.read_csv(tmp_path / "out.csv")["n"].tolist() == [1, 2, 3]
