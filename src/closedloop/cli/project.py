"""Project commands: ``init``, ``train``, ``db`` and ``demo``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from closedloop.cli.output import command_runner, dump_json, json_option, say, workspace
from closedloop.errors import ConfigError

if TYPE_CHECKING:
    from closedloop.domain.gate import GateDecision

PROJECT_TOML = """\
# closedloop project file. Every setting can also be set as CLOSEDLOOP_<SECTION>_<NAME>.

[store]
metadata_url = "sqlite:///.closedloop/metadata.db"   # or postgresql://user@host:5432/db
artifacts_url = ".closedloop/artifacts"              # or s3://bucket/prefix

[pipeline]
model = "{model}"
loader = "pipeline:load_data"      # module:function returning a DataFrame with the target
trainer = "pipeline:train"         # module:function (X, y) -> fitted model
target = "default"
metric = "roc_auc"
gate_margin = 0.0                  # the candidate must beat production by more than this
holdout_fraction = 0.2
seed = 0

[server]
host = "127.0.0.1"
port = 8080

[monitor]
alpha = 0.01
correction = "bonferroni"
window_rows = 5000
"""

PIPELINE_PY = '''\
"""Your training pipeline. closedloop calls these two functions; they need no closedloop import."""

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

CATEGORICAL = ["purpose", "region"]


def load_data() -> pd.DataFrame:
    """Return features and the target column (`default`)."""
    return pd.read_parquet("data/loans.parquet")


def train(X: pd.DataFrame, y: pd.Series):
    """Fit and return any model with fit/predict (and predict_proba)."""
    encode = ColumnTransformer(
        [("categories", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL)],
        remainder="passthrough",
    )
    # a fixed number of trees (no early stopping): retrained versions cost the same per prediction
    booster = HistGradientBoostingClassifier(max_iter=150, early_stopping=False, random_state=0)
    return make_pipeline(encode, booster).fit(X, y)
'''


@click.command("init")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path), default=".")
@click.option("--model", default="loans", show_default=True, help="Name of the model.")
@click.option("--force", is_flag=True, help="Overwrite existing files.")
@command_runner
def init_cmd(folder: Path, model: str, force: bool) -> None:
    """Write closedloop.toml, an example pipeline.py and sample data into FOLDER.

    data/loans.parquet is the training data; data/recent.parquet holds later applications
    (after a drift) with their outcome, data/recent.csv the same without it, as requests.
    """
    from closedloop.domain.simulate import LoanSimulator

    folder.mkdir(parents=True, exist_ok=True)
    files = {
        folder / "closedloop.toml": PROJECT_TOML.format(model=model),
        folder / "pipeline.py": PIPELINE_PY,
    }
    existing = [str(p) for p in files if p.exists()]
    if existing and not force:
        raise ConfigError(
            f"{', '.join(existing)} already exist(s).", hint="Pass --force to overwrite."
        )
    for path, text in files.items():
        path.write_text(text, encoding="utf-8")
    (folder / "data").mkdir(exist_ok=True)
    simulator = LoanSimulator(seed=0)
    data = simulator.reference(5000).drop(columns=["applied_at"])
    data.to_parquet(folder / "data" / "loans.parquet", index=False)
    # later applications, from after the drift the simulator plants: with their outcome, and
    # without it (what a caller sends to `closedloop serve`)
    recent = simulator.stream(1000, start=simulator.drift_at).drop(columns=["applied_at"])
    recent.to_parquet(folder / "data" / "recent.parquet", index=False)
    recent.drop(columns=["default"]).to_csv(folder / "data" / "recent.csv", index=False)
    say(
        f"wrote {folder / 'closedloop.toml'}, {folder / 'pipeline.py'}, "
        f"{folder / 'data' / 'loans.parquet'} ({len(data)} rows) and "
        f"{folder / 'data' / 'recent.parquet'} (+ .csv without the outcome, {len(recent)} rows)"
    )
    say("next: closedloop train")


@click.command("train")
@click.option("--reason", default="", help="Why (recorded in the event log).")
@json_option
@command_runner
def train_cmd(reason: str, as_json: bool) -> None:
    """Run the pipeline: load, split, fit, gate against production, register, promote if better.

    The gate: a paired-bootstrap interval of the improvement over production on the same
    held-out rows (its lower end must clear pipeline.gate_margin), no regression on the
    [gate] slices, and no much slower predictions. --json prints the whole decision.
    """
    from closedloop.services.pipeline import train

    result = train(workspace(), reason=reason)
    if as_json:
        dump_json(result.to_dict())
        return
    say(
        f"registered {result.model} v{result.version} (run {result.run_id[:8]}, "
        f"{result.n_train} training rows, {result.n_holdout} held out)"
    )
    for line in gate_summary(result.decision, result.incumbent_version):
        say(line)
    say(f"production → v{result.version}" if result.promoted else "production unchanged")


def gate_summary(decision: GateDecision, incumbent_version: int | None) -> list[str]:
    """The gate's verdict, then one line per check: the improvement and its interval, the
    slices (failing ones named), the latency ratio."""
    against = "" if incumbent_version is None else f" against production v{incumbent_version}"
    lines = [f"gate {'PASSED' if decision.passed else 'REJECTED'}{against}"]
    lines.extend(f"  - {reason}" for reason in decision.reasons or (decision.reason,))
    interval = decision.interval
    if interval is not None:
        lines.append(
            f"    ({interval.n_bootstrap} paired bootstrap resamples of the held-out rows, "
            f"seed {interval.seed}, {interval.n_undefined} with {decision.metric} undefined; "
            "--json shows every figure)"
        )
    return lines


@click.group("db")
def db_group() -> None:
    """Inspect and upgrade the metadata store's schema."""


@db_group.command("upgrade")
@command_runner
def db_upgrade_cmd() -> None:
    """Migrate the metadata store to this release's schema."""
    from closedloop.storage.metadata.db import MetadataStore

    store = MetadataStore(workspace().settings.metadata_url, check_schema=False)
    before, after = store.upgrade()
    say(f"schema {before or 'empty'} → {after} at {store.display_url}")


@db_group.command("current")
@command_runner
def db_current_cmd() -> None:
    """Show the schema revision of the store and the one this release expects."""
    from closedloop.storage.metadata.db import MetadataStore, head_revision

    store = MetadataStore(workspace().settings.metadata_url, check_schema=False)
    say(
        f"store {store.display_url}: {store.current_revision() or 'empty'}; "
        f"expected: {head_revision()}"
    )


@click.command("demo")
@click.option(
    "--folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=".",
    show_default=True,
    help="Where the demo project and its store are written.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    help="Port for the demo server (default: a free one).",
)
@command_runner
def demo_cmd(folder: Path, port: int) -> None:
    """Run the whole loop on simulated loan data, narrated, and leave its store in FOLDER."""
    from closedloop.demo.runner import run_demo

    run_demo(folder.resolve(), port=port)


def register(cli: click.Group) -> None:
    for command in (init_cmd, train_cmd, db_group, demo_cmd):
        cli.add_command(command)
