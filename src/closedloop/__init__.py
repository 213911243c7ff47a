"""closedloop: keep production machine-learning models healthy after the first deploy.

The public Python API. Importing it is cheap: heavy libraries load when first used.

    import closedloop
    ws = closedloop.open()                      # the project in the current folder
    with closedloop.start_run(ws, name="try") as run:
        run.log_metric("auc", 0.8)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "Workspace",
    "__version__",
    "check_model",
    "open",
    "start_run",
]

if TYPE_CHECKING:
    from closedloop.domain.model import check_model
    from closedloop.services.tracking import start_run
    from closedloop.services.workspace import Workspace

_LAZY = {
    "Workspace": ("closedloop.services.workspace", "Workspace"),
    "start_run": ("closedloop.services.tracking", "start_run"),
    "check_model": ("closedloop.domain.model", "check_model"),
}


def open(project_dir: str | None = None) -> Workspace:
    """Open the project at ``project_dir`` (default: nearest closedloop.toml, else cwd)."""
    from closedloop.services.workspace import Workspace

    return Workspace.open(project_dir)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'closedloop' has no attribute {name!r}")


def __dir__() -> list[str]:
    """Every public name, the lazily imported ones included (``dir()``, completion)."""
    return sorted(set(globals()) | set(__all__))
