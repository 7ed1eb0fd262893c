"""One parse of each botocore model file per process.

botocore caches the JSON models it loads (EC2's alone is megabytes) on each session's loader, so
every new session parses them again. moto's ``mock_aws`` gives each use a new default session,
and the local engine makes clients in many threads: profiling the tests found two thirds of a
moto test's time in ``json.loads`` of the same files. The files are read-only package data, so
one process-wide cache of what ``Loader.load_service_model`` and ``Loader.load_data`` return is
the same answer botocore gives within a session, shared.
"""

from __future__ import annotations

import threading
from typing import Any

from botocore import loaders

_lock = threading.Lock()
_models: dict[tuple[Any, ...], Any] = {}
_installed = False


def _shared(method: Any, name: str) -> Any:
    def wrapper(self: loaders.Loader, *args: Any, **kwargs: Any) -> Any:
        key = (name, tuple(self.search_paths), args, tuple(sorted(kwargs.items())))
        try:
            return _models[key]
        except KeyError:
            pass
        value = method(self, *args, **kwargs)
        with _lock:
            return _models.setdefault(key, value)

    wrapper.__wrapped__ = method  # type: ignore[attr-defined]
    return wrapper


def install() -> None:
    """Share parsed models between every botocore session of this process (idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        loaders.Loader.load_service_model = _shared(loaders.Loader.load_service_model, "model")  # type: ignore[method-assign]
        loaders.Loader.load_data = _shared(loaders.Loader.load_data, "data")  # type: ignore[method-assign]
        _installed = True
