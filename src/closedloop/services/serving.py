"""Model hosting for the inference server: which version of each model answers right now.

The server asks a :class:`ModelHost` for a model's current :class:`LoadedVersion` on every
request. Implementations swap versions atomically in the background.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Protocol

from closedloop.errors import ClosedloopError, NotFoundError
from closedloop.services import registry
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


class RegistryModelHost:
    """Serves every model's production version, following alias moves without a restart.

    A background thread polls the registry every ``poll_interval`` seconds. When a model's
    production alias points to a new version, the version is fetched, verified against its sha256
    and warmed (one prediction on a row of its reference data) *before* it is swapped in with one
    reference assignment, so in-flight requests finish on the old version and no request fails.
    A version that fails to load is recorded in ``errors`` and never receives traffic; the
    previous version keeps serving. When the store is unreachable, serving continues unchanged.
    """

    def __init__(self, ws: Workspace, *, poll_interval: float = 0.5) -> None:
        self.ws = ws
        self.poll_interval = poll_interval
        self._served: dict[str, LoadedVersion] = {}
        self._pinned: dict[tuple[str, int], LoadedVersion] = {}
        self._wanted: dict[str, int] = {}
        self.errors: dict[str, str] = {}
        self._failed: set[tuple[str, int]] = set()
        self.store_ok = True
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.synced = False

    def start(self) -> None:
        """Load what production points to now, then follow it in the background.

        The store must be usable at start (a wrong URL or an outdated schema is an error here);
        later outages are ridden out with what is loaded.
        """
        registry.production_targets(self.ws)
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
        """One reconcile step: load and swap in whatever production now points to."""
        try:
            wanted = registry.production_targets(self.ws)
        except ClosedloopError as exc:
            if self.store_ok:
                log.warning("registry unreachable, serving what is loaded: %s", exc.message)
            self.store_ok = False
            return
        if not self.store_ok:
            log.info("registry reachable again")
        self.store_ok = True
        self._wanted = wanted
        for name, number in wanted.items():
            current = self._served.get(name)
            if current is not None and current.version == number:
                continue
            if (name, number) in self._failed:
                continue
            loaded = self._load(name, number)
            if loaded is not None:
                self._served[name] = loaded  # the atomic swap
                self.errors.pop(name, None)
                log.info("serving %s version %d", name, number)
        for name in set(self._served) - set(wanted):
            del self._served[name]
        self.synced = True

    def _load(self, name: str, number: int) -> LoadedVersion | None:
        try:
            loaded = registry.load_version(self.ws, name, number)
            reference = registry.load_reference(self.ws, name, number)
            loaded.predict(reference.head(1))
        except Exception as exc:  # any failure keeps the version away from traffic
            self._failed.add((name, number))
            self.errors[name] = f"version {number} failed to load: {exc}"
            log.error("%s version %d failed to load and will not serve: %s", name, number, exc)
            return None
        return loaded

    def get(self, name: str) -> LoadedVersion:
        loaded = self._served.get(name)
        if loaded is None:
            raise NotFoundError(
                f"Model {name!r} is not served.",
                hint="Served models: " + (", ".join(sorted(self._served)) or "none") + ".",
            )
        return loaded

    def get_version(self, name: str, version: int) -> LoadedVersion:
        current = self._served.get(name)
        if current is not None and current.version == version:
            return current
        key = (name, version)
        with self._lock:
            if key not in self._pinned:
                if name not in self._served:
                    self.get(name)
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
