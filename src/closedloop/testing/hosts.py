"""In-memory model hosts for tests: serve fixed :class:`LoadedVersion` objects without a registry.

:class:`StaticModelHost` implements the server's :class:`~closedloop.services.serving.ModelHost`
protocol over a dict, so an app can be tested in-process (like httpx's ``MockTransport``)::

    host = StaticModelHost({"churn": loaded_v1})
    client = TestClient(create_app(host))
    host.set("churn", loaded_v2)  # the next request is answered by version 2
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from closedloop.domain.model import LoadedVersion
from closedloop.domain.routing import bucket
from closedloop.errors import NotFoundError


class StaticModelHost:
    """A thread-safe ModelHost over ``{name: LoadedVersion}`` whose versions tests can swap."""

    def __init__(
        self, models: Mapping[str, LoadedVersion] | None = None, *, ready: bool = True
    ) -> None:
        self._lock = threading.Lock()
        self._models: dict[str, LoadedVersion] = dict(models or {})
        self._canaries: dict[str, tuple[LoadedVersion, float]] = {}
        self._shadows: dict[str, LoadedVersion] = {}
        self._ready = ready

    def set_canary(self, name: str, loaded: LoadedVersion | None, weight: float = 0.0) -> None:
        """Send a sticky ``weight`` share of ``name``'s callers to ``loaded`` (None: stop)."""
        with self._lock:
            if loaded is None:
                self._canaries.pop(name, None)
            else:
                self._canaries[name] = (loaded, weight)

    def set_shadow(self, name: str, loaded: LoadedVersion | None) -> None:
        """Mirror ``name``'s traffic to ``loaded`` (None: stop)."""
        with self._lock:
            if loaded is None:
                self._shadows.pop(name, None)
            else:
                self._shadows[name] = loaded

    def route(self, name: str, key: str) -> LoadedVersion:
        """The canary for a sticky share of keys, else the served version."""
        production = self.get(name)
        with self._lock:
            canary = self._canaries.get(name)
        if canary is not None and bucket(name, key) < canary[1]:
            return canary[0]
        return production

    def shadow(self, name: str) -> LoadedVersion | None:
        with self._lock:
            return self._shadows.get(name)

    def weights(self, name: str) -> dict[int, float]:
        production = self.get(name)
        with self._lock:
            canary = self._canaries.get(name)
        if canary is None:
            return {production.version: 1.0}
        return {production.version: 1.0 - canary[1], canary[0].version: canary[1]}

    def set(self, name: str, loaded: LoadedVersion) -> None:
        """Serve ``loaded`` for ``name`` from the next request on (atomic swap)."""
        with self._lock:
            self._models[name] = loaded

    def remove(self, name: str) -> None:
        """Stop serving ``name``; raises NotFoundError if it is not served."""
        with self._lock:
            if name not in self._models:
                raise self._not_found(name)
            del self._models[name]

    def set_ready(self, ready: bool) -> None:
        """Force :meth:`ready` (e.g. to test a not-ready server)."""
        self._ready = ready

    def get(self, name: str) -> LoadedVersion:
        """The version that answers for ``name``; NotFoundError naming the served models."""
        with self._lock:
            loaded = self._models.get(name)
        if loaded is None:
            raise self._not_found(name)
        return loaded

    def get_version(self, name: str, version: int) -> LoadedVersion:
        """``name`` at ``version`` if that is the version served, else NotFoundError."""
        loaded = self.get(name)
        with self._lock:
            others = [c[0] for c in self._canaries.values()] + list(self._shadows.values())
        for other in others:
            if other.model == name and other.version == version:
                return other
        if loaded.version != version:
            raise NotFoundError(
                f"version {version} of model {name!r} is not loaded; "
                f"version {loaded.version} is served",
                details={"model": name, "version": version, "served_version": loaded.version},
            )
        return loaded

    def load_version(self, name: str, version: int) -> LoadedVersion:
        """A static host holds nothing beyond what it serves: as :meth:`get_version`."""
        return self.get_version(name, version)

    def names(self) -> list[str]:
        """Names of the served models, sorted."""
        with self._lock:
            return sorted(self._models)

    def ready(self) -> bool:
        """True unless forced not ready or no model is served."""
        with self._lock:
            return self._ready and bool(self._models)

    def _not_found(self, name: str) -> NotFoundError:
        served = self.names()
        return NotFoundError(
            f"model {name!r} is not served; served models: {served or 'none'}",
            details={"model": name, "served": served},
        )


__all__ = ["StaticModelHost"]
