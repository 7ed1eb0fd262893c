"""The CDK app: ``cdk synth`` / ``cdk deploy`` (cdk.json runs this file), or directly:
``.venv/bin/python cdk/app.py [-c key=value ...]`` writes the cloud assembly to ``cdk.out``.

``build_app`` is what the tests call: one App, one SpotYoloStack, cdk-nag on every synth.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # `python cdk/app.py` puts cdk/ on the path, not the repo
    sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import aws_cdk as cdk  # noqa: E402

from cdk.config import DeployConfig  # noqa: E402
from cdk.nag import add_checks  # noqa: E402
from cdk.spotyolo_stack import SpotYoloStack  # noqa: E402


def cdk_json_context() -> dict[str, Any]:
    """The feature flags and defaults of cdk.json (``cdk.App()`` only sees them via the CLI)."""
    return dict(json.loads((REPO_ROOT / "cdk.json").read_text())["context"])


def build_app(
    context: dict[str, Any] | None = None, *, outdir: str | None = None, validation: bool = True
) -> tuple[cdk.App, SpotYoloStack]:
    """cdk.json context, then ``context`` on top (the CLI's -c values win over both)."""
    app = cdk.App(
        context={**cdk_json_context(), **(context or {})},
        outdir=outdir,
        builtin_cloud_formation_validation=None if validation else False,
    )
    add_checks(app)
    cfg = DeployConfig.from_context(app.node.try_get_context)
    env = cdk.Environment(
        account=os.environ.get("CDK_DEFAULT_ACCOUNT"), region=os.environ.get("CDK_DEFAULT_REGION")
    )
    stack = SpotYoloStack(app, cfg.stack_name, cfg=cfg, env=env)
    return app, stack


def _argv_context(argv: list[str]) -> dict[str, str]:
    """``-c key=value`` pairs for the CLI-less use (``python cdk/app.py -c email=me@x.org``)."""
    context: dict[str, str] = {}
    args = iter(argv)
    for arg in args:
        if arg in ("-c", "--context"):
            key, sep, value = next(args, "").partition("=")
            if not sep:
                raise SystemExit(f"cdk/app.py: expected -c key=value, got -c {key!r}")
            context[key] = value
        else:
            raise SystemExit(
                f"cdk/app.py: unknown argument {arg!r}; usage: python cdk/app.py [-c key=value ...]"
            )
    return context


def main(argv: list[str]) -> None:
    outdir = None if os.environ.get("CDK_OUTDIR") else str(REPO_ROOT / "cdk.out")
    app, _ = build_app(_argv_context(argv), outdir=outdir)
    app.synth()


if __name__ == "__main__":
    main(sys.argv[1:])
