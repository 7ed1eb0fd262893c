"""One synth of the CDK app per test session (built-in CloudFormation validation off here; one
test synthesizes again with it on), offline: the Lambda asset's PyYAML comes from a wheel made
here from the installed pure-Python sources instead of a PyPI download."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cdk_testing import REPO_ROOT, TEST_CONTEXT, Synth, make_pure_python_wheel, synthesize


@pytest.fixture(scope="session")
def wheels_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("wheels")
    make_pure_python_wheel(folder)
    return folder


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory, wheels_dir: Path) -> Iterator[Synth]:
    context = {**TEST_CONTEXT, "lambda_wheels": str(wheels_dir)}
    if not (REPO_ROOT / "container/Dockerfile").is_file():  # test_trainer_image_* fails then
        context["trainer_image"] = "123456789012.dkr.ecr.us-east-1.amazonaws.com/spotyolo:missing-dockerfile"
    yield synthesize(context, tmp_path_factory.mktemp("cdk.out"), validation=False)
