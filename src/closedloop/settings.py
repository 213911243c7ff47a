"""One typed settings tree.

Precedence, highest first: explicit overrides (CLI flags) > ``CLOSEDLOOP_*`` environment variables >
the project file (``closedloop.toml``) > defaults. Environment variable names derive from the tree:
``CLOSEDLOOP_<SECTION>_<FIELD>``, e.g. ``CLOSEDLOOP_STORE_METADATA_URL``.

The project folder is the one holding ``closedloop.toml`` (searched upwards from the working
directory), else the working directory. Relative paths in settings are relative to it.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from closedloop.errors import ConfigError

PROJECT_FILE = "closedloop.toml"
STORE_FOLDER = ".closedloop"
"""The folder of a project's default store; a folder holding one counts as a project."""
ENV_PREFIX = "CLOSEDLOOP_"


@dataclass(frozen=True)
class StoreSettings:
    """Where metadata and artifacts live."""

    metadata_url: str = "sqlite:///.closedloop/metadata.db"
    """SQLAlchemy URL: ``sqlite:///path`` (default) or ``postgresql://user@host/db``."""
    artifacts_url: str = ".closedloop/artifacts"
    """A local folder or an fsspec URL such as ``s3://bucket/prefix``."""
    predictions_url: str = ""
    """Where the prediction log goes; empty means ``<artifacts_url>/predictions``."""
    feedback_url: str = ""
    """Where posted labels go; empty means ``<artifacts_url>/feedback``."""
    s3_endpoint_url: str = ""
    """The S3-compatible endpoint of ``s3://`` URLs (MinIO, Ceph...); empty: botocore's own
    (``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``, the AWS config file, else AWS)."""


@dataclass(frozen=True)
class PipelineSettings:
    """The user's training pipeline, named as ``module:function``."""

    model: str = ""
    loader: str = ""
    trainer: str = ""
    target: str = ""
    metric: str = "roc_auc"
    gate_margin: float = 0.0
    holdout_fraction: float = 0.2
    seed: int = 0


@dataclass(frozen=True)
class ServerSettings:
    """The inference server."""

    host: str = "127.0.0.1"
    port: int = 8080
    poll_interval: float = 0.5
    """Seconds between checks of the registry for moved aliases."""
    flush_interval: float = 1.0
    """Seconds between prediction-log flushes (the most a hard kill can lose)."""
    batch_max_rows: int = 1024
    """Most rows one model call gets when concurrent requests are batched; 1 turns batching off."""
    batch_max_wait_ms: float = 2.0
    """Most milliseconds a batch waits for requests that are still being parsed (never when
    nothing else is in flight)."""
    max_body_bytes: int = 32 * 1024 * 1024
    """Largest request body in bytes (a 413 beyond, before the rest of the body is read)."""
    max_rows: int = 100_000
    """Most rows one prediction request may send (a 413 beyond)."""


@dataclass(frozen=True)
class MonitorSettings:
    """Drift checks."""

    alpha: float = 0.01
    """Family-wise significance level of the per-column tests (see docs/drift.md)."""
    correction: str = "bonferroni"
    window_rows: int = 5000
    min_rows: int = 200
    persistence: int = 2
    """Consecutive drifted windows before a monitor alerts."""
    cooldown_seconds: float = 3600.0
    """After an alert, no new alert for this long."""
    min_weighted_share: float = 0.0
    """Weight the verdict by the version's permutation importance: per-column drift counts only
    when the drifted columns carry at least this share of it; 0 turns weighting off."""


@dataclass(frozen=True)
class AgentSettings:
    """The agent's reconcile loop: triggers, retraining data and how candidates go out."""

    interval_seconds: float = 30.0
    """Seconds between reconcile passes."""
    lease_seconds: float = 60.0
    """How long the active agent's lease lasts; another agent takes over after it lapses."""
    schedule: str = ""
    """Cron expression (5 fields, UTC) for scheduled retraining; empty: no schedule."""
    on_drift: bool = True
    """Retrain when the drift monitor alerts (after its persistence and cooldown)."""
    performance_drop: float = 0.0
    """Retrain when the realised metric on labelled traffic is this much worse than the production
    version's held-out score (lower for accuracy/AUC/R², higher for rmse/mae/log_loss; in the
    metric's units); 0 turns the trigger off."""
    estimated_drop: float = 0.0
    """The same for the label-free estimate (binary classifiers); 0 turns it off."""
    retrain_data: str = "loader"
    """``loader`` (the pipeline's loader), ``traffic`` (recent logged traffic with its labels) or
    ``traffic+loader`` (both, concatenated)."""
    traffic_rows: int = 5000
    """Most recent labelled traffic rows a ``traffic`` retrain uses."""
    min_labelled_rows: int = 200
    """Fewer labelled traffic rows than this and a ``traffic`` retrain fails (recorded, alerted)."""
    rollout: str = "canary"
    """How a candidate that passes the gate goes out: ``canary`` or ``promote`` (at once)."""
    canary_steps: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)
    """Traffic shares of the canary's steps; the first is the starting weight."""
    step_seconds: float = 600.0
    """Minimum time on each canary step before the guardrails may advance it."""


@dataclass(frozen=True)
class GateSettings:
    """The promotion gate's statistics (the margin is ``pipeline.gate_margin``)."""

    bootstrap: int = 1000
    """Paired bootstrap resamples of the held-out rows for the improvement's interval."""
    confidence: float = 0.95
    """Two-sided confidence level of the interval; its lower end must clear the margin."""
    slices: tuple[str, ...] = ()
    """Columns whose categories are slices the candidate must not regress on."""
    slice_tolerance: float = 0.05
    """How much worse than the incumbent the candidate may be on any slice."""
    min_slice_rows: int = 30
    """Slices with fewer held-out rows are reported but not judged."""
    latency_tolerance: float = 0.5
    """How much slower (relative) the candidate's predictions may be: 0.5 means 1.5x."""
    seed: int = 0
    """Seed of the bootstrap."""


@dataclass(frozen=True)
class AlertSettings:
    """Where alerts go (each alert is also an event)."""

    webhook_url: str = ""
    """``http(s)://`` URL receiving a Slack-compatible JSON body; empty: no webhook."""
    webhook_secret: str = ""
    """When set, each body is signed with HMAC-SHA256 (``X-Closedloop-Signature``)."""
    timeout_seconds: float = 5.0
    """Timeout of one delivery attempt."""
    retries: int = 4
    """Further attempts after a failed delivery, with exponential backoff."""
    log_file: str = ""
    """Also append each alert as one JSON line to this file; empty: the log channel only."""
    allow_private_targets: bool = False
    """Let the webhook reach link-local and private addresses (loopback always may)."""
    allowed_hosts: tuple[str, ...] = ()
    """Webhook (or proxy) hosts that may resolve to link-local or private addresses."""


@dataclass(frozen=True)
class Settings:
    """The whole tree."""

    project_dir: Path = field(default_factory=Path.cwd)
    store: StoreSettings = field(default_factory=StoreSettings)
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    monitor: MonitorSettings = field(default_factory=MonitorSettings)
    agent: AgentSettings = field(default_factory=AgentSettings)
    gate: GateSettings = field(default_factory=GateSettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)

    def resolve_path(self, value: str) -> str:
        """Make a relative local path absolute against the project folder; leave URLs alone."""
        if "://" in value or Path(value).is_absolute():
            return value
        return str(self.project_dir / value)

    @property
    def metadata_url(self) -> str:
        url = self.store.metadata_url
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite://":
            return prefix + self.resolve_path(url[len(prefix) :])
        return url

    @property
    def artifacts_url(self) -> str:
        return self.resolve_path(self.store.artifacts_url)

    @property
    def feedback_url(self) -> str:
        if self.store.feedback_url:
            return self.resolve_path(self.store.feedback_url)
        return self.artifacts_url.rstrip("/") + "/feedback"

    def storage_options(self, url: str) -> dict[str, Any]:
        """fsspec options for a store at ``url`` (the S3 endpoint for ``s3://`` URLs)."""
        if self.store.s3_endpoint_url and url.split("://", 1)[0].lower() in ("s3", "s3a"):
            return {"endpoint_url": self.store.s3_endpoint_url}
        return {}

    @property
    def predictions_url(self) -> str:
        if self.store.predictions_url:
            return self.resolve_path(self.store.predictions_url)
        return self.artifacts_url.rstrip("/") + "/predictions"


SECTIONS = {
    "store": StoreSettings,
    "pipeline": PipelineSettings,
    "server": ServerSettings,
    "monitor": MonitorSettings,
    "agent": AgentSettings,
    "gate": GateSettings,
    "alerts": AlertSettings,
}


def find_project_dir(start: Path | None = None) -> Path:
    """The nearest folder at or above ``start`` holding a project file, else ``start``."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / PROJECT_FILE).is_file():
            return folder
    return here


def _coerce(
    section: str, name: str, kind: Any, value: Any, source: str, *, text: bool = False
) -> Any:
    """``value`` as ``kind``. ``text``: the value is a string to parse (an environment variable);
    otherwise it must already have the right type (TOML, flags): ``"0.2"`` is not a number."""
    where = f"{section}.{name} (from {source})"
    try:
        if get_origin(kind) is tuple:
            return _coerce_list(section, name, get_args(kind)[0], value, source, text=text)
        if text and isinstance(value, str):
            return _parse(kind, value)
        if kind is bool and isinstance(value, bool):
            return value
        if kind is int and isinstance(value, int | float) and not isinstance(value, bool):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if kind is str and isinstance(value, str):
            return value
    except ValueError:
        pass
    raise ConfigError(
        f"The setting {where} must be {_kind_name(kind)}. Got {value!r} instead.",
        hint=f"Fix it in {PROJECT_FILE} or the environment.",
    )


def _parse(kind: Any, value: str) -> Any:
    """An environment variable's text as ``kind`` (ValueError when it is not one)."""
    if kind is bool:
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(value)
    if kind is int:
        return int(value)
    if kind is float:
        return float(value)
    if kind is str:
        return value
    raise ValueError(value)


_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _kind_name(kind: Any) -> str:
    if get_origin(kind) is tuple:
        item = _KIND_NAMES[get_args(kind)[0]].removeprefix("a ").removeprefix("an ")
        return f"a list of {item}s"
    return _KIND_NAMES[kind]


def _coerce_list(
    section: str, name: str, item: Any, value: Any, source: str, *, text: bool
) -> tuple[Any, ...]:
    """A TOML list, or a comma-separated string (environment variables)."""
    if text and isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list | tuple):
        raise ValueError(value)
    return tuple(_coerce(section, name, item, part, source, text=text) for part in value)


def _section(section: str, cls: type, values: dict[str, Any], source: str) -> Any:
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"Unknown setting(s) {', '.join(section + '.' + u for u in unknown)} in {source}.",
            hint=f"Known settings in [{section}]: {', '.join(sorted(known))}.",
        )
    return {k: _coerce(section, k, hints[k], v, source) for k, v in values.items()}


def read_project_file(path: Path) -> dict[str, dict[str, Any]]:
    """Parse and validate a project file into per-section dicts."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}.", hint="Fix the syntax.") from exc
    except OSError as exc:
        raise ConfigError(f"Cannot read {path}: {exc.strerror}.") from exc
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(
            f"Unknown section(s) [{'], ['.join(unknown)}] in {path}.",
            hint=f"Known sections: {', '.join(sorted(SECTIONS))}.",
        )
    out: dict[str, dict[str, Any]] = {}
    for name, cls in SECTIONS.items():
        raw = data.get(name, {})
        if not isinstance(raw, dict):
            raise ConfigError(f"[{name}] in {path} must be a table. Got {raw!r} instead.")
        out[name] = _section(name, cls, raw, str(path))
    return out


def _from_env(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, cls in SECTIONS.items():
        hints = get_type_hints(cls)
        for f in fields(cls):
            key = f"{ENV_PREFIX}{name}_{f.name}".upper()
            if key in env:
                value = _coerce(name, f.name, hints[f.name], env[key], key, text=True)
                out.setdefault(name, {})[f.name] = value
    return out


def load_settings(
    project_dir: Path | None = None,
    *,
    overrides: dict[str, dict[str, Any]] | None = None,
    env: dict[str, str] | None = None,
) -> Settings:
    """Build the settings tree from defaults, the project file, the environment and overrides."""
    folder = find_project_dir(project_dir)
    layers: list[dict[str, dict[str, Any]]] = []
    project_file = folder / PROJECT_FILE
    if project_file.is_file():
        layers.append(read_project_file(project_file))
    layers.append(_from_env(dict(os.environ) if env is None else env))
    if overrides:
        layers.append(
            {s: _section(s, SECTIONS[s], v, "command line") for s, v in overrides.items()}
        )
    settings = Settings(project_dir=folder)
    for layer in layers:
        for name, values in layer.items():
            if values:
                section = replace(getattr(settings, name), **values)
                settings = replace(settings, **{name: section})
    return settings
