"""The workspace: one project's settings and the stores they point to, opened lazily.

Every service takes a workspace. Nothing here is global: two workspaces (two projects, two
databases) can live in one process and in different threads.
"""

from __future__ import annotations

import getpass
import os
import threading
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from closedloop.errors import ConfigError, NotFoundError
from closedloop.settings import (
    PROJECT_FILE,
    STORE_FOLDER,
    Settings,
    StoreSettings,
    load_settings,
)

if TYPE_CHECKING:
    from closedloop.storage.artifacts import ArtifactStore
    from closedloop.storage.feedback import FeedbackLog
    from closedloop.storage.metadata.db import MetadataStore
    from closedloop.storage.predictions import PredictionLog


def default_actor() -> str:
    """Who is acting when nobody says: ``CLOSEDLOOP_ACTOR``, else ``user:<login name>``."""
    actor = os.environ.get("CLOSEDLOOP_ACTOR")
    if actor:
        return actor
    try:
        return f"user:{getpass.getuser()}"
    except (KeyError, OSError):  # pragma: no cover - no passwd entry
        return "user:unknown"


class Workspace:
    """A project's settings plus its metadata store, artifact store and prediction log."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or load_settings()
        self._lock = threading.Lock()

    @classmethod
    def open(cls, project_dir: str | Path | None = None) -> Workspace:
        return cls(load_settings(Path(project_dir) if project_dir else None))

    def require_project(self) -> None:
        """ConfigError unless a project file was found, a store folder (``.closedloop/``) is here,
        or the store is named elsewhere (the environment): commands that open the store never
        invent a project in a random folder."""
        settings = self.settings
        if (settings.project_dir / PROJECT_FILE).is_file():
            return
        if (settings.project_dir / STORE_FOLDER).is_dir():  # a store left here (the demo's)
            return
        if settings.store.metadata_url != StoreSettings().metadata_url:
            return
        raise ConfigError(
            f"No project here (looked for {PROJECT_FILE} from {settings.project_dir} upwards).",
            hint="Run `closedloop init` to start one, or pass --project FOLDER.",
        )

    def require_store(self) -> None:
        """NotFoundError when the project's SQLite store does not exist yet (nothing is created
        by asking; the first `closedloop train` creates it)."""
        url, prefix = self.settings.metadata_url, "sqlite:///"
        if not url.startswith(prefix) or url == prefix + ":memory:":
            return
        path = Path(url[len(prefix) :])
        if not path.is_file():
            raise NotFoundError(
                f"Nothing is recorded in this project yet: its store {path} does not exist.",
                hint="Run `closedloop train` to register a first version.",
            )

    @cached_property
    def metadata(self) -> MetadataStore:
        from closedloop.storage.metadata.db import MetadataStore

        with self._lock:
            return MetadataStore(self.settings.metadata_url)

    @cached_property
    def artifacts(self) -> ArtifactStore:
        """The artifact store, once checked to belong to this metadata store (see
        ``ArtifactStore.check_pairing``: a missing bucket, or a store paired with another
        metadata store, is refused before anything is read or written)."""
        from closedloop.storage.artifacts import ArtifactStore

        url = self.settings.artifacts_url
        store = ArtifactStore(url, storage_options=self.settings.storage_options(url))
        metadata = self.metadata
        store.check_pairing(
            metadata.store_id(), metadata.display_url, metadata.referenced_artifact()
        )
        return store

    def prediction_log(self, *, flush_interval: float | None = None) -> PredictionLog:
        """A new prediction-log writer/reader for this project (callers close it)."""
        from closedloop.storage.predictions import PredictionLog

        interval = self.settings.server.flush_interval if flush_interval is None else flush_interval
        url = self.settings.predictions_url
        return PredictionLog(
            url, flush_interval=interval, storage_options=self.settings.storage_options(url)
        )

    def feedback_log(self) -> FeedbackLog:
        """The log of labels posted after predictions (joined by request id)."""
        from closedloop.storage.feedback import FeedbackLog

        url = self.settings.feedback_url
        return FeedbackLog(url, storage_options=self.settings.storage_options(url))

    def close(self) -> None:
        if "metadata" in self.__dict__:
            self.metadata.dispose()
