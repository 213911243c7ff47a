"""Small real models and frames used across tests."""

from __future__ import annotations

from typing import Any

import pandas as pd

from closedloop.domain.simulate import LoanSimulator

LABEL = "default"


def loans(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """Pre-drift simulated loans without the timestamp column."""
    return LoanSimulator(seed=seed).reference(n).drop(columns=["applied_at"])


def fit_model(frame: pd.DataFrame, *, invert: bool = False) -> Any:
    """A small scikit-learn pipeline (one-hot categories + logistic regression)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    X = frame.drop(columns=[LABEL])
    y = frame[LABEL] if not invert else 1 - frame[LABEL]
    categorical = [
        c
        for c in X.columns
        if X[c].dtype == object or str(X[c].dtype) in ("string", "str", "category")
    ]
    numeric = [c for c in X.columns if c not in categorical]
    encode = ColumnTransformer(
        [
            ("categories", OneHotEncoder(handle_unknown="ignore"), categorical),
            ("numbers", StandardScaler(), numeric),
        ]
    )
    return make_pipeline(encode, LogisticRegression(max_iter=500)).fit(X, y)


def features(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=[LABEL])


# -- a regression and a multiclass problem (scikit-learn's bundled data) ----------------------

PROGRESSION = "progression"
SPECIES = "species"


def diabetes() -> pd.DataFrame:
    """442 patients: ten numeric features and the disease progression (a float target)."""
    from sklearn.datasets import load_diabetes

    return load_diabetes(as_frame=True).frame.rename(columns={"target": PROGRESSION})


def iris() -> pd.DataFrame:
    """150 flowers: four measurements and the species (int classes 0, 1, 2)."""
    from sklearn.datasets import load_iris

    frame = load_iris(as_frame=True).frame.rename(columns={"target": SPECIES})
    frame.columns = [str(c).replace(" (cm)", "").replace(" ", "_") for c in frame.columns]
    return frame


def fit_ridge(X: pd.DataFrame, y: pd.Series) -> Any:
    """A regression trainer (``module:function`` for the pipeline)."""
    from sklearn.linear_model import Ridge

    return Ridge(alpha=0.1).fit(X, y)


def fit_multiclass(X: pd.DataFrame, y: pd.Series) -> Any:
    """A three-class trainer (``module:function`` for the pipeline)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, y)
