"""One synth of the CDK app per test session (built-in CloudFormation validation off here; one
test synthesizes again with it on). The Lambda asset's wheels are the real CPython 3.14
manylinux ones from the wheel cache (``make venv`` fills it; a first run without it downloads
them from PyPI once, as ``cdk synth`` does)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cdk_testing import REPO_ROOT, TEST_CONTEXT, Synth, repack_installed, synthesize

from cdk import lambda_bundle


@pytest.fixture(scope="session")
def wheels_dir() -> Path:
    """The folder of the Lambda's wheels (CPython 3.14, manylinux x86_64)."""
    return lambda_bundle.resolve_wheels()[0].parent


@pytest.fixture(scope="session")
def host_wheels_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same requirements as wheels for the interpreter running the tests (to import them)."""
    folder = tmp_path_factory.mktemp("host-wheels")
    for requirement in lambda_bundle.LAMBDA_REQUIREMENTS:
        repack_installed(requirement, folder)
    return folder


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory, wheels_dir: Path) -> Iterator[Synth]:
    context = {**TEST_CONTEXT, "lambda_wheels": str(wheels_dir)}
    if not (REPO_ROOT / "container/Dockerfile").is_file():  # test_trainer_image_* fails then
        context["trainer_image"] = "123456789012.dkr.ecr.us-east-1.amazonaws.com/spotyolo:missing-dockerfile"
    yield synthesize(context, tmp_path_factory.mktemp("cdk.out"), validation=False)
