"""Modules a process may import but rarely uses, loaded on first use instead of at import.

redis-py 5.3 imports ``redis.auth.token`` from its connection modules, which imports PyJWT, which imports
``cryptography``: about 60 ms of a worker's cold start (bench/cold_start.py) for a class only Entra ID token
authentication uses. ``defer("jwt")`` before redis is first imported puts a stand-in module in
``sys.modules``: ``import jwt`` (redis' included) binds the stand-in, and the first attribute read from it
imports the real PyJWT and answers from it, so code that does use PyJWT is unaffected.
(``importlib.util.LazyLoader`` does not help here: the import statement itself reads the module's
``__spec__``, which makes LazyLoader run the real import at once.)
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType
from typing import Any


class _Deferred(ModuleType):
    """Stands in for a module until something reads one of its attributes."""

    def __getattr__(self, attr: str) -> Any:
        name = self.__name__
        if sys.modules.get(name) is self:
            del sys.modules[name]
            try:
                real = importlib.import_module(name)
            except BaseException:
                sys.modules[name] = self
                raise
        else:
            real = sys.modules.get(name) or importlib.import_module(name)
        return getattr(real, attr)


def defer(name: str) -> bool:
    """Make ``import name`` lazy; False when it is already imported or not installed (nothing to do)."""
    if name in sys.modules or importlib.util.find_spec(name) is None:
        return False
    stand_in = _Deferred(name)
    stand_in.__spec__ = None  # the import statement reads it: a stand-in is never "being initialised"
    sys.modules[name] = stand_in
    return True
