"""Model hosting for the inference server: which version of each model answers right now.

The server asks a :class:`ModelHost` for a model's current :class:`LoadedVersion` on every
request. Implementations swap versions atomically in the background.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from closedloop.domain.routing import bucket
from closedloop.errors import ClosedloopError, NotFoundError
from closedloop.services import registry, rollout
from closedloop.services.rollout import ServingPlan
from closedloop.services.workspace import Workspace

if TYPE_CHECKING:
    from closedloop.domain.model import LoadedVersion

log = logging.getLogger("closedloop.serving")


class ModelHost(Protocol):
    """What the inference server needs from the serving service."""

    def get(self, name: str) -> LoadedVersion:
        """The version that answers for ``name`` now; raises NotFoundError if none is served."""
        ...

    def get_version(self, name: str, version: int) -> LoadedVersion:
        """A specific served version; raises NotFoundError if it is not loaded."""
        ...

    def names(self) -> list[str]:
        """Names of the models currently served."""
        ...

    def ready(self) -> bool:
        """True when every model that should be served has a loaded version."""
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


def _versions(plan: ServingPlan) -> list[int]:
    return [v for v in (plan.production, plan.canary, plan.shadow) if v is not None]


class RegistryModelHost:
    """Serves every model's production version (and its canary and shadow), following the
    registry and the rollout state without a restart.

    A background thread polls the store every ``poll_interval`` seconds. A version that is newly
    needed is fetched, verified against its sha256 and warmed (one prediction on a row of its
    reference data) *before* the model's :class:`Served` record is replaced with one reference
    assignment, so in-flight requests finish on the old versions and no request fails. A version
    that fails to load is recorded in ``errors`` and never receives traffic (a failed canary gets
    no share; a failed production keeps the previous one serving). When the store is
    unreachable, serving continues unchanged and resumes following it when it is back.
    """

    def __init__(self, ws: Workspace, *, poll_interval: float = 0.5) -> None:
        self.ws = ws
        self.poll_interval = poll_interval
        self._served: dict[str, Served] = {}
        self._cache: dict[tuple[str, int], LoadedVersion] = {}
        self._pinned: dict[tuple[str, int], LoadedVersion] = {}
        self._wanted: dict[str, ServingPlan] = {}
        self.errors: dict[str, str] = {}
        self._failed: set[tuple[str, int]] = set()
        self.store_ok = True
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.synced = False

    def start(self) -> None:
        """Load what should serve now, then follow it in the background.

        The store must be usable at start (a wrong URL or an outdated schema is an error here);
        later outages are ridden out with what is loaded.
        """
        current_plans(self.ws)
        self.sync()
        self._thread = threading.Thread(target=self._loop, name="closedloop-host", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_interval):
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
        except Exception as exc:  # any failure keeps the version away from traffic
            self._failed.add(key)
            self.errors[name] = f"version {number} failed to load: {exc}"
            log.error("%s version %d failed to load and will not serve: %s", name, number, exc)
            return None
        self._cache[key] = loaded
        return loaded

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
        for loaded in (record.production, record.canary, record.shadow):
            if loaded is not None and loaded.version == version:
                return loaded
        key = (name, version)
        with self._lock:
            if key not in self._pinned:
                try:
                    self._pinned[key] = registry.load_version(self.ws, name, version)
                except ClosedloopError as exc:
                    raise NotFoundError(
                        f"Version {version} of {name!r} cannot be served: {exc.message}"
                    ) from exc
            return self._pinned[key]

    def names(self) -> list[str]:
        return sorted(self._served)

    def ready(self) -> bool:
        return self.synced and all(name in self._served for name in self._wanted)
