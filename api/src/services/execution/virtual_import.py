"""Virtual import hook: workspace modules import from the module cache.

`import workflows.hello` in a worker finds `workflows/hello.py` in the
workspace (Redis, with the store behind it); `workflows/__init__.py` makes a
package, and a folder without one is a namespace package. The finder sits
after the normal ones, so installed packages and the standard library always
win over a workspace file of the same name.

Workspace modules are dropped from `sys.modules` before each execution
(`reset_workspace_modules`), so an edited file takes effect on the next run.

An execution's process holds no way into Redis: its worker reads the index
and the files its module loads ahead (`prefetch_workspace`), and any other
file it imports (a helper module, an `importlib.import_module` of a computed
name) it asks its worker for (`WorkspaceSource`, see `workspace_requests.py`).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, Protocol

ORIGIN_PREFIX = "workspace://"


class WorkspaceSource(Protocol):
    """Where an execution's process gets the workspace it was not given."""

    def index(self) -> list[str]: ...

    def file(self, path: str) -> str | None: ...


class WorkspaceLoader(importlib.abc.Loader):
    def __init__(self, path: str | None,
                 read: Callable[[str], str | None] = lambda path: None) -> None:
        self.path = path  # None for a namespace package (a folder, no __init__.py)
        self.read = read  # a file's text by its path (`WorkspaceFinder.read`)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None  # the default module object

    def exec_module(self, module: ModuleType) -> None:
        if self.path is None:
            return
        source = self.read(self.path)
        if source is None:
            raise ImportError(f"workspace file {self.path} vanished", name=module.__name__)
        module.__file__ = ORIGIN_PREFIX + self.path
        code = compile(source, ORIGIN_PREFIX + self.path, "exec", dont_inherit=True)
        exec(code, module.__dict__)


class WorkspaceFinder(importlib.abc.MetaPathFinder):
    """Finds modules by their path in the workspace index."""

    # False in worker processes: their executions never hold the store's URL,
    # so they read Redis alone (pools keep it warm).
    from_store = True

    def __init__(self) -> None:
        self._index: set[str] | None = None
        self._sources: dict[str, str] = {}
        self._source: WorkspaceSource | None = None

    def reset(self) -> None:
        self._index = None
        self._sources = {}
        self._source = None

    def prefetch(self, module: str) -> None:
        """Read the index and the files `module` and its packages load from,
        ahead of the import: a worker does it over its own connection before
        forking an execution, which then imports without a round trip."""
        self.reset()
        paths = self._paths()
        parts = module.split(".")
        wanted = [candidate
                  for depth in range(1, len(parts) + 1)
                  for base in ["/".join(parts[:depth])]
                  for candidate in (f"{base}/__init__.py", f"{base}.py")
                  if candidate in paths]
        self._sources = _module_cache().cached_files_sync(wanted)

    def prefetched(self) -> dict[str, Any]:
        return {"index": sorted(self._paths()), "sources": self._sources}

    def seed(self, index: list[str] | None, sources: dict[str, str],
             source: WorkspaceSource | None = None) -> None:
        """Import from what was read elsewhere; what is missing, ask `source`."""
        self._index = None if index is None else set(index)
        self._sources, self._source = dict(sources), source

    def read(self, path: str) -> str | None:
        if path in self._sources:
            return self._sources[path]
        if self._source is not None:
            return self._source.file(path)
        return _module_cache().read_file_sync(path, from_store=self.from_store)

    def _paths(self) -> set[str]:
        # One index read per execution, not one per import.
        index = self._index
        if index is None:
            found = (self._source.index() if self._source is not None
                     else _module_cache().index_sync(from_store=self.from_store))
            index = self._index = set(found)
        return index

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        base = fullname.replace(".", "/")
        try:
            paths = self._paths()
        except Exception:
            return None  # neither Redis nor the store answered: not a workspace module
        origin = ORIGIN_PREFIX + base
        if f"{base}/__init__.py" in paths:
            spec = importlib.machinery.ModuleSpec(
                fullname, WorkspaceLoader(f"{base}/__init__.py", self.read),
                origin=origin + "/__init__.py", is_package=True,
            )
            spec.submodule_search_locations = [origin]
            return spec
        if f"{base}.py" in paths:
            return importlib.machinery.ModuleSpec(
                fullname, WorkspaceLoader(f"{base}.py", self.read), origin=origin + ".py"
            )
        if any(p.startswith(base + "/") for p in paths):
            spec = importlib.machinery.ModuleSpec(
                fullname, WorkspaceLoader(None), origin=origin, is_package=True
            )
            spec.submodule_search_locations = [origin]
            return spec
        return None


def _module_cache() -> ModuleType:
    """Imported on first use: the process that forks executions must stay
    small (a fork copies the page tables of all it has loaded), and Redis's
    client is large; an execution whose files were read ahead never needs it."""
    from src.core import module_cache

    return module_cache


def _finder() -> WorkspaceFinder | None:
    return next((f for f in sys.meta_path if isinstance(f, WorkspaceFinder)), None)


def install_virtual_import_hook() -> WorkspaceFinder:
    """Append the workspace finder to `sys.meta_path` once; returns it."""
    finder = _finder()
    if finder is None:
        finder = WorkspaceFinder()
        sys.meta_path.append(finder)
    return finder


def prefetch_workspace(module: str) -> dict[str, Any]:
    """The workspace index and the files `module` loads, read now (see
    `WorkspaceFinder.prefetch`), for `seed_workspace` in another process; {}
    when there is no hook or Redis did not answer (the import reads it then)."""
    finder = _finder()
    if finder is None:
        return {}
    try:
        finder.prefetch(module)
    except Exception:
        finder.reset()
        return {}
    return finder.prefetched()


def seed_workspace(workspace: dict[str, Any], source: WorkspaceSource | None = None) -> None:
    """Use what `prefetch_workspace` read elsewhere instead of reading it
    again, and ask `source` for the rest."""
    finder = _finder()
    if finder is not None and ("index" in workspace or source is not None):
        finder.seed(workspace.get("index"), workspace.get("sources") or {}, source)


def read_workspace_from_cache_only() -> None:
    """Workspace modules load from Redis alone in this process and the ones it forks."""
    WorkspaceFinder.from_store = False


def reset_workspace_modules() -> None:
    """Forget every module loaded from the workspace, and the index."""
    for name, module in list(sys.modules.items()):
        spec = getattr(module, "__spec__", None)
        if spec is not None and isinstance(spec.loader, WorkspaceLoader):
            del sys.modules[name]
    finder = _finder()
    if finder is not None:
        finder.reset()
