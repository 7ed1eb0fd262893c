"""The Lambda asset is built locally (no Docker, no layer) from functions/, spotyolo/ and wheels."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from importlib.metadata import distribution, version
from pathlib import Path

import pytest
from cdk_testing import REPO_ROOT, Synth, top_level_modules
from fake_settings import make_settings
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from cdk import lambda_bundle
from cdk.config import ConfigError, DeployConfig

HOST_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
#: the Lambda runtime's environment markers (python3.14, x86_64)
LAMBDA_MARKERS = {
    "python_version": lambda_bundle.PYTHON_VERSION,
    "python_full_version": f"{lambda_bundle.PYTHON_VERSION}.0",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "os_name": "posix",
}


def test_asset_holds_code_and_wheels_and_is_reused(tmp_path: Path, wheels_dir: Path) -> None:
    wheels = lambda_bundle.resolve_wheels(wheels_dir)
    first = lambda_bundle.build_asset(wheels, out_root=tmp_path)
    assert (first / "functions/validate.py").is_file() and (first / "spotyolo/contract/layout.py").is_file()
    assert (first / "yaml/__init__.py").is_file() and (first / "aws_lambda_powertools/__init__.py").is_file()
    assert not list(first.rglob("__pycache__")) and not list(first.rglob("*.pyc"))
    again = lambda_bundle.build_asset(wheels, out_root=tmp_path)
    assert again == first  # unchanged inputs: same folder, nothing copied again


def _runtime_dir(tmp_path: Path) -> Path:
    """What the Lambda runtime adds to the asset: boto3 and its dependencies, nothing else."""
    folder = tmp_path / "runtime"
    folder.mkdir()
    for dist in lambda_bundle.RUNTIME_PROVIDES:
        for name in top_level_modules(dist):
            (folder / name).symlink_to(Path(str(distribution(dist).locate_file(name))))
    return folder


IMPORT_HANDLERS = """
import importlib, sys, sysconfig
asset, runtime = sys.argv[1], sys.argv[2]
sys.path[:0] = [asset, runtime]
for h in sys.argv[3:]:
    mod, func = h.rsplit('.', 1)
    assert callable(getattr(importlib.import_module(mod), func)), h
assert 'aws_xray_sdk' in sys.modules, 'the Tracer did not start: is LAMBDA_TASK_ROOT set?'
stdlib = sysconfig.get_paths()['stdlib']
for name, module in sorted(sys.modules.items()):
    where = getattr(module, '__file__', None) or ''
    assert not where or where.startswith((asset, runtime, stdlib)), (name, where)
"""


def _import_handlers(asset: Path, runtime: Path, handlers: list[str]) -> subprocess.CompletedProcess[str]:
    """What Lambda does at a cold start: import each handler with only the asset and the runtime
    on sys.path (``-I -S``: no site-packages, no PYTHONPATH), the Tracer on as in Lambda."""
    return subprocess.run(
        [sys.executable, "-I", "-S", "-c", IMPORT_HANDLERS, str(asset), str(runtime), *handlers],
        cwd=asset,
        capture_output=True,
        text=True,
        env={
            "PATH": "/usr/bin:/bin",
            "AWS_DEFAULT_REGION": "us-east-1",
            "LAMBDA_TASK_ROOT": str(asset),
            **make_settings().to_env(),  # an entry point checks its environment at import
        },
        check=False,
    )


@pytest.mark.parametrize("left_out", [None, "aws-xray-sdk"])
def test_every_handler_imports_from_the_asset_and_the_runtime_alone(
    synth: Synth, tmp_path: Path, host_wheels_dir: Path, left_out: str | None
) -> None:
    """The asset's requirements, as wheels for this interpreter (the 3.14 ones cannot be imported
    here), are all a handler needs beside boto3; leave one out and the import fails."""
    requirements = tuple(r for r in lambda_bundle.LAMBDA_REQUIREMENTS if not r.startswith(f"{left_out}=="))
    found = lambda_bundle.find_wheels(host_wheels_dir, requirements, python_version=HOST_PYTHON)
    assert None not in found.values(), found
    wheels = [w for w in found.values() if w is not None]
    asset = lambda_bundle.build_asset(wheels, out_root=tmp_path / "build", python_version="host")
    handlers = sorted(fn["Properties"]["Handler"] for fn in synth.of_type("AWS::Lambda::Function").values())
    proc = _import_handlers(asset, _runtime_dir(tmp_path), handlers)
    if left_out is None:
        assert proc.returncode == 0, proc.stderr[-3000:]
    else:
        assert proc.returncode != 0 and "No module named 'aws_xray_sdk'" in proc.stderr, proc.stderr[-3000:]


def test_wheels_built_for_another_python_are_refused_with_the_fix(host_wheels_dir: Path) -> None:
    """The venv's compiled packages (CPython 3.11 builds) must never reach the 3.14 runtime."""
    with pytest.raises(lambda_bundle.BundleError) as refused:
        lambda_bundle.resolve_wheels(host_wheels_dir)
    message = str(refused.value)
    assert "CPython 3.14" in message and "pip download --only-binary=:all:" in message
    named = message.split("no wheel for ", 1)[1].split(" that fits", 1)[0].split(", ")
    assert {"pydantic-core==2.50.5", "PyYAML==6.0.4", "wrapt==2.5.2"} <= set(named)
    assert not any(r.startswith(("pydantic==", "aws-lambda-powertools==")) for r in named)  # pure Python


def _closure(requirements: list[str]) -> set[str]:
    """Every distribution ``requirements`` pull in on the Lambda runtime (installed metadata)."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        for sub in map(Requirement, distribution(req.name).requires or []):
            extras = ["", *sorted(req.extras)]
            if sub.marker is None or any(sub.marker.evaluate({**LAMBDA_MARKERS, "extra": e}) for e in extras):
                todo.append(sub)
    return seen


def test_requirements_are_the_dependency_closure_at_the_tested_versions() -> None:
    """A Powertools or pydantic upgrade that adds a dependency fails here, not in a cold start."""
    deps = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    wanted = _closure(deps) - _closure(["boto3"])
    assert {canonicalize_name(d) for d in lambda_bundle.RUNTIME_PROVIDES} == _closure(["boto3"])
    bundled = {canonicalize_name(r.partition("==")[0]) for r in lambda_bundle.LAMBDA_REQUIREMENTS}
    assert bundled == wanted, f"add {sorted(wanted - bundled)}, drop {sorted(bundled - wanted)}"
    for req in lambda_bundle.LAMBDA_REQUIREMENTS:
        name, _, pinned = req.partition("==")
        assert version(name) == pinned, f"{req}: the venv has {version(name)}; keep them equal"
        if canonicalize_name(name) == "aws-lambda-powertools":
            assert f"aws-lambda-powertools[parser,tracer]=={pinned}" in deps
    assert lambda_bundle.REPO_ROOT == REPO_ROOT


def test_a_filled_wheel_cache_needs_no_network_and_a_gap_names_the_fix(
    tmp_path: Path, wheels_dir: Path
) -> None:
    """``python -m cdk.lambda_bundle`` (make venv) with the cache filled touches no index; with a
    wheel missing and no index it fails naming the wheel and the offline fix."""
    cache = tmp_path / "cache"
    folder = cache / f"cp314-{lambda_bundle.PLATFORM}"
    folder.mkdir(parents=True)
    for wheel in wheels_dir.glob("*.whl"):  # a filled cache: no pip download, no network
        (folder / wheel.name).symlink_to(wheel)
    offline = {"PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1"}  # pip download finds nothing
    env = {**os.environ, "SPOTYOLO_WHEEL_CACHE": str(cache), **offline}
    proc = subprocess.run(
        [sys.executable, "-m", "cdk.lambda_bundle"], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0 and str(folder) in proc.stdout, proc.stderr[-2000:]
    (folder / next(iter(sorted(p.name for p in folder.iterdir() if "pydantic_core" in p.name)))).unlink()
    proc = subprocess.run(
        [sys.executable, "-m", "cdk.lambda_bundle"], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert (
        proc.returncode != 0 and "pydantic-core==2.50.5" in proc.stderr and "lambda_wheels=DIR" in proc.stderr
    )


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
        ({"max_instances": "-1"}, "context max_instances=-1: must be between 0 and 10000"),
        ({"max_instances": "two"}, "context max_instances='two'"),
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


def test_max_instances_reaches_the_lambdas_settings() -> None:
    """The deploy option of issue 12: the count of instance slots, 0 (the quota decides) by default."""
    from spotyolo.contract.env import Settings

    assert DeployConfig.from_context({}).max_instances == 0
    assert DeployConfig.from_context({"max_instances": "2"}).max_instances == 2
    env = {"BUCKET": "b", "JOB_TABLE": "j", "SLOT_TABLE": "s", "TOPIC_ARN": "t", "TRAINER_IMAGE": "i"}
    env |= {"LAUNCH_TEMPLATE_ID": "lt", "SUBNET_IDS": "subnet-1", "MAX_INSTANCES": "2"}
    settings = Settings.from_env(env)
    assert settings.max_instances == 2 and Settings.from_env(settings.to_env()) == settings
