"""Signatures are inferred from training features and coerce request columns to them."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest

from closedloop.domain.signature import ColumnSpec, Signature, infer_signature
from closedloop.errors import SchemaError


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "income": [10.5, np.nan, 30.0],
            "age": [20, 35, 61],
            "member": [True, False, True],
            "plan": ["basic", "pro", "basic"],
            "region": pd.Series(["eu", "us", "eu"], dtype="category"),
            "visits": pd.array([1, None, 3], dtype="Int64"),
        }
    )


@pytest.fixture
def signature(frame: pd.DataFrame) -> Signature:
    return infer_signature(frame)


def good_columns() -> dict[str, Any]:
    return {
        "income": [1.0, 2.5],
        "age": [30, 40],
        "member": [True, False],
        "plan": ["basic", "pro"],
        "region": ["eu", "us"],
        "visits": [1, 2],
    }


def test_infer_on_mixed_dtypes(signature: Signature) -> None:
    assert signature.names() == ["income", "age", "member", "plan", "region", "visits"]
    by_name = {c.name: c for c in signature.columns}
    assert by_name["income"] == ColumnSpec("income", "float", True, None, 10.5, 30.0)
    assert by_name["age"] == ColumnSpec("age", "integer", False, None, 20.0, 61.0)
    assert by_name["member"] == ColumnSpec("member", "boolean", False)
    assert by_name["plan"] == ColumnSpec("plan", "string", False, ("basic", "pro"))
    assert by_name["region"] == ColumnSpec("region", "string", False, ("eu", "us"))
    assert by_name["visits"] == ColumnSpec("visits", "integer", True, None, 1.0, 3.0)


def test_many_distinct_strings_record_no_categories() -> None:
    signature = infer_signature(pd.DataFrame({"id": [f"user-{i}" for i in range(1001)]}))
    assert signature.columns[0].categories is None


def test_unsupported_columns_are_rejected_when_inferring() -> None:
    with pytest.raises(SchemaError, match="'when' has unsupported dtype"):
        infer_signature(pd.DataFrame({"when": pd.to_datetime(["2024-01-01"])}))
    with pytest.raises(SchemaError, match="mixes value types"):
        infer_signature(pd.DataFrame({"mixed": pd.Series(["a", 1], dtype=object)}))
    with pytest.raises(SchemaError, match="column names must be strings"):
        infer_signature(pd.DataFrame({0: [1.0]}))


def test_to_dict_from_dict_round_trip_through_json(signature: Signature) -> None:
    as_json = orjson.dumps(signature.to_dict())
    assert Signature.from_dict(orjson.loads(as_json)) == signature


def test_from_dict_rejects_an_unknown_dtype() -> None:
    with pytest.raises(SchemaError, match="unknown dtype 'complex'"):
        Signature.from_dict({"columns": [{"name": "z", "dtype": "complex"}]})


def test_frame_follows_signature_order_and_training_dtypes(signature: Signature) -> None:
    columns = good_columns()
    reordered = {name: columns[name] for name in reversed(list(columns))}
    frame = signature.frame_from_columns(reordered)
    assert list(frame.columns) == signature.names()
    assert frame["income"].dtype == np.float64
    assert frame["age"].dtype == np.int64
    assert frame["member"].dtype == bool
    assert frame["plan"].tolist() == ["basic", "pro"]


def test_lenient_but_lossless_coercions(signature: Signature) -> None:
    columns = {
        **good_columns(),
        "income": [1, 2],  # ints in a float column
        "age": [30.0, 41.0],  # integral floats in an integer column
        "member": [1, 0],  # 0/1 in a boolean column
        "visits": [None, 2],  # null in a nullable column
    }
    frame = signature.frame_from_columns(columns)
    assert frame["income"].tolist() == [1.0, 2.0]
    assert frame["age"].tolist() == [30, 41]
    assert frame["age"].dtype == np.int64
    assert frame["member"].tolist() == [True, False]
    assert frame["visits"].isna().tolist() == [True, False]


def test_numpy_arrays_are_accepted(signature: Signature) -> None:
    columns = {
        **good_columns(),
        "income": np.array([1.0, np.nan]),
        "age": np.array([3, 4], dtype=np.int32),
        "member": np.array([True, False]),
        "plan": np.array(["basic", "pro"]),
    }
    frame = signature.frame_from_columns(columns)
    assert frame["age"].dtype == np.int64
    assert np.isnan(frame["income"].iloc[1])


def test_unseen_categories_and_out_of_range_values_pass_through(signature: Signature) -> None:
    columns = {**good_columns(), "plan": ["enterprise", "basic"], "income": [1e12, -5.0]}
    frame = signature.frame_from_columns(columns)
    assert frame["plan"].tolist() == ["enterprise", "basic"]
    assert frame["income"].tolist() == [1e12, -5.0]


INT64_RANGE = "holds integers from -9223372036854775808 to 9223372036854775807"


@pytest.mark.parametrize(
    ("values", "row", "got"),
    [
        ([30, 1e300], 1, "1e+300"),
        ([2**63, 30], 0, str(2**63)),
        ([-(2**63) - 1, 30], 0, str(-(2**63) - 1)),
        (np.array([30, 2**64 - 1], dtype=np.uint64), 1, str(2**64 - 1)),
        ([30, float("inf")], 1, "inf"),
        (np.array([float("-inf"), 30.0]), 0, "-inf"),
        ([9.3e18, 30], 0, "9.3e+18"),
    ],
)
def test_an_integer_column_refuses_values_an_int64_cannot_hold(
    signature: Signature, values: Any, row: int, got: str
) -> None:
    with pytest.raises(SchemaError) as caught:
        signature.frame_from_columns({**good_columns(), "age": values})
    assert f"column 'age' {INT64_RANGE}; row {row} has {got}" == caught.value.message
    assert caught.value.details == {
        "column": "age",
        "expected": {"minimum": -(2**63), "maximum": 2**63 - 1},
        "got": got,
        "row": row,
    }


def test_an_integer_column_takes_its_extremes(signature: Signature) -> None:
    columns = {**good_columns(), "age": [-(2**63), 2**63 - 1]}
    assert signature.frame_from_columns(columns)["age"].tolist() == [-(2**63), 2**63 - 1]
    floats = {**good_columns(), "age": [-(2.0**63), 1e18]}
    assert signature.frame_from_columns(floats)["age"].tolist() == [-(2**63), 10**18]


@pytest.mark.parametrize("values", [[1.0, float("inf")], np.array([-np.inf, 1.0])])
def test_a_float_column_refuses_infinities_training_never_saw(
    signature: Signature, values: Any
) -> None:
    with pytest.raises(SchemaError, match="column 'income' expects finite numbers") as caught:
        signature.frame_from_columns({**good_columns(), "income": values})
    assert caught.value.details["column"] == "income"
    assert caught.value.details["expected"] == "finite float"


def test_infinities_training_saw_and_nulls_of_a_nullable_column_are_accepted() -> None:
    signature = infer_signature(pd.DataFrame({"ratio": [1.0, np.inf, np.nan]}))
    frame = signature.frame_from_columns({"ratio": [np.inf, None, np.nan, 2.0]})
    assert frame["ratio"].tolist()[0] == np.inf
    assert frame["ratio"].isna().tolist() == [False, True, True, False]
    with pytest.raises(SchemaError, match="row 0 has -inf"):
        signature.frame_from_columns({"ratio": [-np.inf]})


def test_missing_and_unknown_columns_are_named(signature: Signature) -> None:
    columns = {k: v for k, v in good_columns().items() if k != "age"}
    columns["colour"] = ["red", "blue"]
    with pytest.raises(SchemaError) as caught:
        signature.frame_from_columns(columns)
    assert "missing column(s) 'age'" in caught.value.message
    assert "unknown column(s) 'colour'" in caught.value.message
    assert caught.value.details["expected"] == signature.names()


def test_unequal_lengths_are_rejected(signature: Signature) -> None:
    with pytest.raises(SchemaError, match="unequal lengths") as caught:
        signature.frame_from_columns({**good_columns(), "age": [1]})
    assert caught.value.details["lengths"]["age"] == 1


@pytest.mark.parametrize(
    ("column", "values", "expected", "got", "row"),
    [
        ("income", [1.0, "abc"], "float", "abc", 1),
        ("income", [True, 1.0], "float", True, 0),
        ("age", [1, 1.5], "integer", 1.5, 1),
        ("age", ["7", 1], "integer", "7", 0),
        ("plan", ["basic", 3], "string", 3, 1),
        ("plan", [{"a": 1}, "pro"], "string", "{'a': 1}", 0),
        ("member", [True, "yes"], "boolean", "yes", 1),
        ("member", [2, 0], "boolean", 2, 0),
        ("member", [1.0, 0.0], "boolean", 1.0, 0),
    ],
)
def test_wrong_types_name_column_expected_type_and_first_offender(
    signature: Signature, column: str, values: list[Any], expected: str, got: Any, row: int
) -> None:
    with pytest.raises(SchemaError) as caught:
        signature.frame_from_columns({**good_columns(), column: values})
    assert caught.value.details == {"column": column, "expected": expected, "got": got, "row": row}
    assert f"column {column!r} expects {expected}" in caught.value.message


@pytest.mark.parametrize(
    ("column", "values"),
    [("age", [1, None]), ("plan", [None, "pro"]), ("member", [True, None]), ("age", [1.0, np.nan])],
)
def test_nulls_in_non_nullable_columns_are_rejected(
    signature: Signature, column: str, values: list[Any]
) -> None:
    with pytest.raises(SchemaError, match="does not accept nulls") as caught:
        signature.frame_from_columns({**good_columns(), column: values})
    assert caught.value.details["column"] == column


def test_non_list_and_nested_values_are_rejected(signature: Signature) -> None:
    with pytest.raises(SchemaError, match="must be a list of values"):
        signature.frame_from_columns({**good_columns(), "plan": "basic"})
    with pytest.raises(SchemaError, match="flat list"):
        signature.frame_from_columns({**good_columns(), "plan": [["a"], ["b"]]})


# -- the target and label coercion --------------------------------------------------------------


def test_the_target_of_a_classifier_is_its_classes_and_of_a_regressor_a_float() -> None:
    from sklearn.linear_model import LinearRegression, LogisticRegression

    from closedloop.domain.signature import TargetSpec, infer_target

    X = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]})
    classes = LogisticRegression().fit(X, [0, 1, 2, 0, 1, 2])
    assert infer_target(classes) == TargetSpec("multiclass", "integer", (0, 1, 2))
    words = LogisticRegression().fit(X, ["no", "yes"] * 3)
    assert infer_target(words) == TargetSpec("binary", "string", ("no", "yes"))
    assert infer_target(LinearRegression().fit(X, [0.5, 1, 2, 3, 4, 5])) == TargetSpec(
        "regression", "float"
    )
    # a model that says neither: told by its labels and predictions, or not at all
    assert infer_target(object(), [1.5, 2.0]).task == "regression"  # type: ignore[union-attr]
    assert infer_target(object(), [1, 2], [2, 2]) == TargetSpec("binary", "integer", (1, 2))
    assert infer_target(object(), [1, 2]) is None


def test_labels_are_coerced_to_the_target_type_or_refused_naming_it() -> None:
    from closedloop.domain.signature import TargetSpec

    classes = TargetSpec("multiclass", "integer", (0, 1, 2))
    coerced = classes.coerce([2, "1", 0.0, np.int64(1)])
    assert coerced.dtype == np.int64 and coerced.tolist() == [2, 1, 0, 1]
    with pytest.raises(SchemaError, match=r"label 1 \('setosa', str\).*integer class label"):
        classes.coerce([1, "setosa"])
    regression = TargetSpec("regression", "float")
    assert regression.coerce([151, "3.5", 2.25]).tolist() == [151.0, 3.5, 2.25]
    for bad in (True, "high", float("nan"), None, float("inf"), "-inf", "NaN"):
        with pytest.raises(SchemaError, match="cannot be read as a number"):
            regression.coerce([1.0, bad])
    # a label of the classes' type that is not one of the classes is refused too
    with pytest.raises(SchemaError, match=r"label 1 \(7, int\) is not an integer class label"):
        classes.coerce([1, 7])
    with pytest.raises(SchemaError, match="'banana', str\\) is not a string class label"):
        TargetSpec("binary", "string", ("no", "yes")).coerce(["yes", "banana"])
    assert classes.known(np.array([0, 2, 3])).tolist() == [True, True, False]
    assert regression.known(np.array([1e9])).tolist() == [True]
    assert TargetSpec("binary", "boolean", (False, True)).coerce([1, "false", True]).tolist() == [
        True,
        False,
        True,
    ]
    values, valid = regression.coerce_valid(pd.Series(["1", "n/a", 3], dtype=object))
    assert valid.tolist() == [True, False, True] and values[[0, 2]].tolist() == [1.0, 3.0]


def test_a_signature_keeps_its_target_through_json_and_older_ones_have_none() -> None:
    from closedloop.domain.signature import TargetSpec

    columns = (ColumnSpec("x", "float"),)
    signature = Signature(columns, TargetSpec("multiclass", "string", ("a", "b", "c")))
    assert Signature.from_dict(orjson.loads(orjson.dumps(signature.to_dict()))) == signature
    assert Signature.from_dict({"columns": [columns[0].to_dict()]}).target is None
