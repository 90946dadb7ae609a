"""PEP 562 lazy attributes for a package: names imported from their module on first use,
so that importing the package does not load PyMC and the other heavy dependencies."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_getattr(
    package: str, lazy: Mapping[str, str], namespace: dict[str, Any]
) -> Callable[[str], Any]:
    """The module ``__getattr__`` of ``package``: a name in ``lazy`` is imported from the
    module it maps to and kept in ``namespace`` (the package's ``globals()``) so the next
    use is a plain look-up; any other name raises AttributeError."""

    def __getattr__(name: str) -> Any:
        if name in lazy:
            value = getattr(importlib.import_module(lazy[name]), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
