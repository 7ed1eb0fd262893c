"""The Lambda entry points (``functions/<name>.py``), loaded the way the Lambda runtime loads
them: from the files the CDK app puts in the code asset, one module per function."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

from spotyolo.contract.lambdas import LAMBDAS, LambdaName
from spotyolo.contract.sources import FUNCTIONS_DIR, require

LambdaHandler = Callable[[Any, Any], Any]


def load_handler(name: LambdaName) -> LambdaHandler:
    """A fresh module of ``functions/<name>.py`` (its import is the function's cold start)."""
    path = require(FUNCTIONS_DIR / f"{name.value}.py")
    spec = importlib.util.spec_from_file_location(LAMBDAS[name].module, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    handler: LambdaHandler = module.handler
    return handler


def load_handlers() -> dict[LambdaName, LambdaHandler]:
    return {name: load_handler(name) for name in LAMBDAS}
