"""The Lambda asset is built locally (no Docker) from functions/, spotyolo/ and wheels."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cdk_testing import REPO_ROOT, Synth, make_pure_python_wheel
from fake_settings import make_settings

from cdk import lambda_bundle
from cdk.config import ConfigError, DeployConfig


def test_asset_holds_code_and_wheels_and_is_reused(tmp_path: Path, wheels_dir: Path) -> None:
    wheels = lambda_bundle.resolve_wheels(wheels_dir)
    first = lambda_bundle.build_asset(wheels, out_root=tmp_path)
    assert (first / "functions/validate.py").is_file() and (first / "spotyolo/contract/layout.py").is_file()
    assert (first / "yaml/__init__.py").is_file() and (first / "PyYAML-6.0.4.dist-info/METADATA").is_file()
    assert not list(first.rglob("__pycache__")) and not list(first.rglob("*.pyc"))
    again = lambda_bundle.build_asset(wheels, out_root=tmp_path)
    assert again == first  # unchanged inputs: same folder, nothing copied again


def test_every_handler_imports_from_the_asset_alone(synth: Synth, tmp_path: Path, wheels_dir: Path) -> None:
    """What Lambda does: import functions.<name> from the asset (plus layer-provided packages)."""
    asset = lambda_bundle.build_asset(lambda_bundle.resolve_wheels(wheels_dir), out_root=tmp_path)
    handlers = sorted(fn["Properties"]["Handler"] for fn in synth.of_type("AWS::Lambda::Function").values())
    code = (
        "import importlib, sys\n"
        f"sys.path.insert(0, {str(asset)!r})\n"
        f"for h in {handlers!r}:\n"
        "    mod, func = h.rsplit('.', 1)\n"
        "    assert callable(getattr(importlib.import_module(mod), func)), h\n"
        "import yaml, spotyolo\n"
        f"assert yaml.__file__.startswith({str(asset)!r}) and spotyolo.__file__.startswith({str(asset)!r})\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        # the environment the CDK app gives every function (an entry point checks it at import)
        env={"PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": "us-east-1", **make_settings().to_env()},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_a_wheel_for_another_python_is_refused_with_the_fix(tmp_path: Path) -> None:
    make_pure_python_wheel(tmp_path, tag="cp311-cp311-manylinux2014_x86_64")
    with pytest.raises(lambda_bundle.BundleError, match=r"PyYAML==6\.0\.4.*CPython 3\.14.*pip download"):
        lambda_bundle.resolve_wheels(tmp_path)


def test_requirements_pin_the_tested_versions() -> None:
    from importlib.metadata import version

    for req in lambda_bundle.LAMBDA_REQUIREMENTS:
        name, _, pinned = req.partition("==")
        assert version(name) == pinned, f"{req}: the venv has {version(name)}; keep them equal"
    assert lambda_bundle.REPO_ROOT == REPO_ROOT


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"email": "not-an-address"}, "context email: 'not-an-address'"),
        ({"phone": "0155 5501"}, "E.164"),
        ({"vpc_id": "vpc-0123456789abcdef0"}, "vpc_id and subnet_ids go together"),
        ({"instance_types": "g5 xlarge"}, "context instance_types"),
        ({"log_retention_days": "10"}, "CloudWatch accepts only"),
        ({"root_volume_gb": "big"}, "context root_volume_gb='big'"),
        ({"bucket_name": "My_Bucket"}, "context bucket_name"),
    ],
)
def test_bad_context_fails_naming_the_key_and_the_fix(context: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        DeployConfig.from_context(context)


def test_context_lists_accept_commas_and_json() -> None:
    cfg = DeployConfig.from_context(
        {"instance_types": '["g6.xlarge", "g5.2xlarge"]', "email": "a@b.io, c@d.io"}
    )
    assert cfg.instance_types == ["g6.xlarge", "g5.2xlarge"] and cfg.emails == ["a@b.io", "c@d.io"]
    assert DeployConfig.from_context({}).instance_types == ["g5.xlarge", "g6.xlarge", "g4dn.xlarge"]
