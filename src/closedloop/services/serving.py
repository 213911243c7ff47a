"""Model hosting for the inference server: which version of each model answers right now.

The server asks a :class:`ModelHost` for a model's current :class:`LoadedVersion` on every
request. Implementations swap versions atomically in the background.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from closedloop.domain.routing import bucket
from closedloop.errors import ClosedloopError, NotFoundError
from closedloop.services import registry, rollout
from closedloop.services.events import ROLLOUT_CHANNEL
from closedloop.services.rollout import ServingPlan
from closedloop.services.workspace import Workspace
from closedloop.storage.names import MODEL_NAME_RULE, is_model_name

if TYPE_CHECKING:
    import pandas as pd

    from closedloop.domain.model import LoadedVersion

log = logging.getLogger("closedloop.serving")


class ModelHost(Protocol):
    """What the inference server needs from the serving service."""

    def get(self, name: str) -> LoadedVersion:
        """The version that answers for ``name`` now; raises NotFoundError if none is served."""
        ...

    def get_version(self, name: str, version: int) -> LoadedVersion:
        """A version in ``name``'s serving plan (production, canary or shadow) by number;
        NotFoundError naming the plan for any other. Never does I/O."""
        ...

    def load_version(self, name: str, version: int) -> LoadedVersion:
        """Any registered version of ``name``, loaded on demand (blocking: call it in a worker
        thread) and kept in a small cache; for callers allowed outside the serving plan."""
        ...

    def names(self) -> list[str]:
        """Names of the models currently served."""
        ...

    def ready(self) -> bool:
        """True when at least one model is served and every model that should be served has a
        loaded version (a server with nothing to serve is not ready)."""
        ...

    def route(self, name: str, key: str) -> LoadedVersion:
        """The version that answers a caller with routing ``key``: the canary for a sticky
        share of keys while a canary runs, else production."""
        ...

    def shadow(self, name: str) -> LoadedVersion | None:
        """The version that gets a mirrored copy of ``name``'s traffic, if any."""
        ...

    def weights(self, name: str) -> dict[int, float]:
        """Current traffic share of each served version of ``name``."""
        ...


@dataclass(frozen=True)
class Served:
    """What answers for one model right now; replaced as a whole, never mutated."""

    production: LoadedVersion
    canary: LoadedVersion | None = None
    canary_weight: float = 0.0
    shadow: LoadedVersion | None = None


def current_plans(ws: Workspace) -> dict[str, ServingPlan]:
    """Every served model's plan: production plus any canary and shadow of its rollout."""
    return {name: p for name, p in rollout.serving_plan(ws).items() if p.production is not None}


CALIBRATION_ROWS = 2000
"""Most reference plus held-out rows a version's call plan is checked on at load."""


def calibration_sample(
    ws: Workspace, loaded: LoadedVersion, reference: pd.DataFrame
) -> pd.DataFrame:
    """The version's reference rows plus its held-out evaluation rows (signature columns)."""
    import pandas as pd

    names = loaded.signature.names()
    parts = [reference[names]]
    evaluation = registry.load_evaluation(ws, loaded.model, loaded.version)
    if evaluation is not None and set(names) <= set(evaluation.columns):
        parts.append(evaluation[names])
    return pd.concat(parts, ignore_index=True).head(CALIBRATION_ROWS)


ON_DEMAND_VERSIONS = 4
"""Most versions outside the serving plan kept loaded (least recently used go first)."""


def _versions(plan: ServingPlan) -> list[int]:
    return [v for v in (plan.production, plan.canary, plan.shadow) if v is not None]


class RegistryModelHost:
    """Serves every model's production version (and its canary and shadow), following the
    registry and the rollout state without a restart.

    A background thread polls the store every ``poll_interval`` seconds; on PostgreSQL it also
    listens on the ``closedloop_rollout`` channel (see :mod:`closedloop.services.events`) and
    reloads as soon as an alias moves or a rollout transitions. Polling stays as the fallback: a
    lost listening connection is re-opened in the background and never stops serving.

    A version that is newly needed is fetched, verified against its sha256, warmed (one
    prediction on a row of its reference data) and calibrated (its ``CallPlan``, checked on
    its reference and held-out rows) *before* the model's :class:`Served` record is replaced with
    one reference assignment, so in-flight requests finish on the old versions and no request
    fails. A version that fails to load is recorded in ``errors`` and never receives traffic (a
    failed canary gets no share; a failed production keeps the previous one serving). When the
    store is unreachable, serving continues unchanged and resumes following it when it is back.
    """

    def __init__(self, ws: Workspace, *, poll_interval: float = 0.5) -> None:
        self.ws = ws
        self.poll_interval = poll_interval
        self._served: dict[str, Served] = {}
        self._cache: dict[tuple[str, int], LoadedVersion] = {}
        self._on_demand: OrderedDict[tuple[str, int], LoadedVersion] = OrderedDict()
        self._wanted: dict[str, ServingPlan] = {}
        self.errors: dict[str, str] = {}
        self._failed: set[tuple[str, int]] = set()
        self.store_ok = True
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._listener: RolloutListener | None = None
        self._lock = threading.Lock()
        self.synced = False

    def start(self) -> None:
        """Load what should serve now, then follow it in the background.

        The store must be usable at start (a wrong URL or an outdated schema is an error here);
        later outages are ridden out with what is loaded.
        """
        current_plans(self.ws)
        _ = self.ws.artifacts  # opened (bucket and marker checked) before anything is served
        self.sync()
        self._thread = threading.Thread(target=self._loop, name="closedloop-host", daemon=True)
        self._thread.start()
        if self.ws.metadata.dialect == "postgresql":
            url = self.ws.metadata.engine.url.set(drivername="postgresql")
            self._listener = RolloutListener(
                url.render_as_string(hide_password=False), self._wake.set, self._stop
            )
            self._listener.start()

    @property
    def listening(self) -> bool:
        """True while rollout notifications are being received (PostgreSQL only)."""
        return self._listener is not None and self._listener.listening

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for thread in (self._thread, self._listener):
            if thread is not None:
                thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll_interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            self.sync()

    def sync(self) -> None:
        """One reconcile step: load what the plans need, then swap each model's record."""
        try:
            wanted = current_plans(self.ws)
        except Exception as exc:  # the store is down or misbehaving: keep serving
            if self.store_ok:
                log.warning("store unreachable, serving what is loaded: %s", exc)
            self.store_ok = False
            return
        if not self.store_ok:
            log.info("store reachable again")
        self.store_ok = True
        self._wanted = wanted
        for name, plan in wanted.items():
            self._reconcile(name, plan)
        for name in set(self._served) - set(wanted):
            del self._served[name]
        needed = {(n, v) for n, p in wanted.items() for v in _versions(p)}
        for key in set(self._cache) - needed:
            del self._cache[key]
        self.synced = True

    def _reconcile(self, name: str, plan: ServingPlan) -> None:
        assert plan.production is not None  # current_plans keeps served models only
        current = self._served.get(name)
        production = self._load(name, plan.production)
        if production is None:
            if current is None:
                return
            production = current.production  # keep serving the last good production
        canary = self._load(name, plan.canary) if plan.canary is not None else None
        shadow = self._load(name, plan.shadow) if plan.shadow is not None else None
        record = Served(production, canary, plan.canary_weight if canary else 0.0, shadow)
        if current is None and not is_model_name(name):
            log.warning(
                "model %r is served, but its predictions and feedback are not logged: its name "
                "breaks the model name rule (%s); register it under a name that follows it",
                name,
                MODEL_NAME_RULE,
            )
        if current != record:
            self._served[name] = record  # the atomic swap
            log.info(
                "serving %s: production v%d%s%s",
                name,
                production.version,
                f", canary v{canary.version} at {record.canary_weight:.0%}" if canary else "",
                f", shadow v{shadow.version}" if shadow else "",
            )

    def _load(self, name: str, number: int) -> LoadedVersion | None:
        key = (name, number)
        if key in self._cache:
            return self._cache[key]
        if key in self._failed:
            return None
        try:
            loaded = registry.load_version(self.ws, name, number)
            reference = registry.load_reference(self.ws, name, number)
            loaded.predict(reference.head(1))
            self._calibrate(loaded, reference)
        except Exception as exc:  # any failure keeps the version away from traffic
            self._failed.add(key)
            self.errors[name] = f"version {number} failed to load: {exc}"
            log.error("%s version %d failed to load and will not serve: %s", name, number, exc)
            return None
        self._cache[key] = loaded
        return loaded

    def _calibrate(self, loaded: LoadedVersion, reference: pd.DataFrame) -> None:
        """Choose the version's call plan on its reference and held-out rows (see CallPlan).

        A sample the shortcuts cannot be checked on leaves the plain calls in place.
        """
        try:
            sample = calibration_sample(self.ws, loaded, reference)
            plan = loaded.calibrate(sample)
        except Exception as exc:
            log.warning(
                "%s version %d: serving with plain calls (%s)", loaded.model, loaded.version, exc
            )
            return
        log.info(
            "%s version %d: %s, %s input",
            loaded.model,
            loaded.version,
            "one predict_proba call" if plan.one_call else "plain calls",
            "array" if plan.array_input else "DataFrame",
        )

    def _record(self, name: str) -> Served:
        record = self._served.get(name)
        if record is None:
            raise NotFoundError(
                f"Model {name!r} is not served.",
                hint="Served models: " + (", ".join(sorted(self._served)) or "none") + ".",
            )
        return record

    def get(self, name: str) -> LoadedVersion:
        return self._record(name).production

    def route(self, name: str, key: str) -> LoadedVersion:
        record = self._record(name)
        if record.canary is not None and bucket(name, key) < record.canary_weight:
            return record.canary
        return record.production

    def shadow(self, name: str) -> LoadedVersion | None:
        record = self._served.get(name)
        return None if record is None else record.shadow

    def weights(self, name: str) -> dict[int, float]:
        record = self._record(name)
        if record.canary is None:
            return {record.production.version: 1.0}
        return {
            record.production.version: 1.0 - record.canary_weight,
            record.canary.version: record.canary_weight,
        }

    def get_version(self, name: str, version: int) -> LoadedVersion:
        record = self._record(name)
        roles = {"production": record.production, "canary": record.canary, "shadow": record.shadow}
        plan = {role: loaded for role, loaded in roles.items() if loaded is not None}
        for loaded in plan.values():
            if loaded.version == version:
                return loaded
        serving = ", ".join(f"{role} v{loaded.version}" for role, loaded in plan.items())
        raise NotFoundError(
            f"version {version} of model {name!r} is not in its serving plan ({serving}); "
            "only those versions answer by number",
            hint=f"Leave out the version to get the one that serves now, or ask for one of "
            f"{sorted({loaded.version for loaded in plan.values()})}; to serve version "
            f"{version}, move an alias to it (`closedloop alias set`) or start a rollout.",
            details={
                "model": name,
                "version": version,
                "plan": {role: loaded.version for role, loaded in plan.items()},
            },
        )

    def load_version(self, name: str, version: int) -> LoadedVersion:
        key = (name, version)
        with self._lock:
            loaded = self._on_demand.get(key)
            if loaded is None:
                try:
                    loaded = registry.load_version(self.ws, name, version)
                except ClosedloopError as exc:
                    raise NotFoundError(
                        f"Version {version} of {name!r} cannot be served: {exc.message}"
                    ) from exc
                self._on_demand[key] = loaded
                while len(self._on_demand) > ON_DEMAND_VERSIONS:
                    self._on_demand.popitem(last=False)
            self._on_demand.move_to_end(key)
            return loaded

    def names(self) -> list[str]:
        return sorted(self._served)

    def ready(self) -> bool:
        return (
            self.synced
            and bool(self._served)
            and all(name in self._served for name in self._wanted)
        )


class RolloutListener(threading.Thread):
    """``LISTEN closedloop_rollout`` on its own PostgreSQL connection; ``wake()`` on each
    notification (and after every (re)connect, to catch up on what was missed meanwhile).

    A failed or lost connection is retried every ``retry`` seconds until ``stop`` is set; it is
    logged once per outage and never raised.
    """

    def __init__(
        self, url: str, wake: Callable[[], None], stop: threading.Event, *, retry: float = 1.0
    ) -> None:
        super().__init__(name="closedloop-rollout-listener", daemon=True)
        self.url = url
        self.wake = wake
        self.stop_event = stop
        self.retry = retry
        self.listening = False

    def run(self) -> None:
        failing = False
        while not self.stop_event.is_set():
            try:
                self._listen()
                failing = False
            except Exception as exc:
                if not failing:
                    log.warning("not listening for rollout changes (polling meanwhile): %s", exc)
                failing = True
            finally:
                self.listening = False
            self.stop_event.wait(self.retry)

    def _listen(self) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f"LISTEN {ROLLOUT_CHANNEL}")
            self.listening = True
            self.wake()
            while not self.stop_event.is_set():
                for _ in conn.notifies(timeout=1.0, stop_after=1):
                    self.wake()
