"""Lazy re-exports for package ``__init__`` modules: a public name is imported from its module on first use,
so importing a package costs nothing and has no side effects."""

from __future__ import annotations

import importlib
import sys
from typing import Callable


def lazy_exports(package: str, table: dict) -> tuple[Callable, Callable, list]:
    """``(__getattr__, __dir__, __all__)`` for ``package`` re-exporting ``table`` (public name -> module path
    relative to the package). Each value is cached in the package's namespace after its first use."""
    names = sorted(table)

    def __getattr__(name: str):
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__():
        return names

    return __getattr__, __dir__, names
