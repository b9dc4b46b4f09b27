"""Virtual import hook: workspace modules load from the module cache.

First version: the hook is installed in the right place in start-up order and
finds nothing yet; the module cache fills it in.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType


class WorkspaceFinder(importlib.abc.MetaPathFinder):
    """Placed after the normal finders, so installed packages always win."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        return None


def install_virtual_import_hook() -> WorkspaceFinder:
    """Append the workspace finder to `sys.meta_path` once; returns it."""
    for finder in sys.meta_path:
        if isinstance(finder, WorkspaceFinder):
            return finder
    finder = WorkspaceFinder()
    sys.meta_path.append(finder)
    return finder
