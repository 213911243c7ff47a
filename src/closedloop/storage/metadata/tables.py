"""The metadata schema (SQLAlchemy Core). Changes go through a new Alembic migration."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

models = Table(
    "models",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("description", Text, nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

versions = Table(
    "versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_id", Integer, ForeignKey("models.id"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("artifact_sha256", String(64), nullable=False),
    Column("artifact_format", String(32), nullable=False),
    Column("signature", JSON, nullable=False),
    Column("metrics", JSON, nullable=False),
    Column("params", JSON, nullable=False),
    Column("lineage", JSON, nullable=False),
    Column("profile_sha256", String(64), nullable=True),
    Column("reference_sha256", String(64), nullable=True),
    Column("evaluation_sha256", String(64), nullable=True),
    Column("run_id", String(32), nullable=True),
    Column("description", Text, nullable=False, default=""),
    UniqueConstraint("model_id", "number", name="uq_versions_model_number"),
)

aliases = Table(
    "aliases",
    metadata,
    Column("model_id", Integer, ForeignKey("models.id"), primary_key=True),
    Column("name", String(100), primary_key=True),
    Column("version_number", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

events = Table(
    "events",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("ts", DateTime(timezone=True), nullable=False, index=True),
    Column("actor", String(200), nullable=False),
    Column("kind", String(64), nullable=False, index=True),
    Column("model", String(200), nullable=True, index=True),
    Column("version", Integer, nullable=True),
    Column("payload", JSON, nullable=False),
    Column("reason", Text, nullable=False, default=""),
)

runs = Table(
    "runs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("experiment", String(200), nullable=False, index=True),
    Column("status", String(16), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True), nullable=True),
    Column("params", JSON, nullable=False),
    Column("tags", JSON, nullable=False),
    Column("code", JSON, nullable=False),
    Column("environment", JSON, nullable=False),
    Column("error", Text, nullable=True),
)

run_metrics = Table(
    "run_metrics",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("run_id", String(32), ForeignKey("runs.id"), nullable=False, index=True),
    Column("key", String(200), nullable=False),
    Column("value", Float, nullable=False),
    Column("step", Integer, nullable=False),
    Column("ts", DateTime(timezone=True), nullable=False),
)

run_artifacts = Table(
    "run_artifacts",
    metadata,
    Column("run_id", String(32), ForeignKey("runs.id"), primary_key=True),
    Column("name", String(500), primary_key=True),
    Column("sha256", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
)

datasets = Table(
    "datasets",
    metadata,
    Column("sha256", String(64), primary_key=True),
    Column("source", Text, nullable=False),
    Column("schema", JSON, nullable=False),
    Column("n_rows", BigInteger, nullable=False),
    Column("profile_sha256", String(64), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

run_datasets = Table(
    "run_datasets",
    metadata,
    Column("run_id", String(32), ForeignKey("runs.id"), primary_key=True),
    Column("dataset_sha256", String(64), ForeignKey("datasets.sha256"), primary_key=True),
    Column("role", String(32), primary_key=True),
)

checks = Table(
    "checks",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("model", String(200), nullable=False, index=True),
    Column("version", Integer, nullable=True),
    Column("ts", DateTime(timezone=True), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("n_reference", BigInteger, nullable=False),
    Column("n_current", BigInteger, nullable=False),
    Column("drifted", Boolean, nullable=False),
    Column("result", JSON, nullable=False),
)

rollouts = Table(
    "rollouts",
    metadata,
    Column("model_id", Integer, ForeignKey("models.id"), primary_key=True),
    Column("mode", String(16), nullable=False),
    Column("candidate_version", Integer, nullable=True),
    Column("weight", Float, nullable=False),
    Column("steps", JSON, nullable=False),
    Column("step_index", Integer, nullable=False),
    Column("step_started_at", DateTime(timezone=True), nullable=True),
    Column("step_duration_seconds", Float, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

leases = Table(
    "leases",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("holder", String(200), nullable=False),
    Column("token", BigInteger, nullable=False),
    Column("acquired_at", DateTime(timezone=True), nullable=False),
    Column("renewed_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

store_identity = Table(
    "store_identity",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
"""One row: the metadata store's id, also written in the artifact store's marker."""
