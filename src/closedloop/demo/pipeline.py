"""The demo's training code: plain scikit-learn, exactly what a user's pipeline.py looks like."""

from __future__ import annotations

from typing import Any

import pandas as pd

CATEGORICAL = ["purpose", "region"]


def train(X: pd.DataFrame, y: pd.Series) -> Any:
    """A gradient-boosted classifier with one-hot categories (unknown categories ignored)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    encode = ColumnTransformer(
        [("categories", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL)],
        remainder="passthrough",
    )
    # A fixed number of trees (no early stopping), so every version costs the same per prediction.
    booster = HistGradientBoostingClassifier(max_iter=150, early_stopping=False, random_state=0)
    model = make_pipeline(encode, booster)
    return model.fit(X, y)


def train_sabotaged(X: pd.DataFrame, y: pd.Series) -> Any:
    """A deliberately bad model: the same recipe fitted on inverted labels."""
    return train(X, 1 - y)
