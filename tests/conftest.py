"""Session-wide test setup: offline Ultralytics, fake AWS credentials, the tiny shapes dataset."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# before anything imports boto3 or ultralytics
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_SECURITY_TOKEN", "testing")
os.environ.setdefault("AWS_SESSION_TOKEN", "testing")
os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
os.environ["AWS_REGION"] = "us-east-1"
os.environ["YOLO_OFFLINE"] = "1"
os.environ["JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION"] = "20"
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "spotyolo-tests")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "spotyolo-tests")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("YOLO_CONFIG_DIR", str(ROOT / ".yolo"))


def _load_generator():
    spec = importlib.util.spec_from_file_location("generate_shapes", ROOT / "examples" / "generate_shapes.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["generate_shapes"] = module
    spec.loader.exec_module(module)
    return module


generate_shapes = _load_generator()


@pytest.fixture(scope="session")
def ultralytics_offline() -> Path:
    """Ultralytics configured to never touch the network (font in place, sync off)."""
    from spotyolo.trainer.offline import prepare_ultralytics

    return prepare_ultralytics(os.environ["YOLO_CONFIG_DIR"])


@pytest.fixture(scope="session")
def shapes_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny shapes dataset (24 train / 8 val, 64 px): returns the folder holding data.yaml."""
    out = tmp_path_factory.mktemp("shapes") / "dataset"
    generate_shapes.generate(out, train=24, val=8, size=64, seed=1)
    return out


@pytest.fixture(scope="session")
def shapes_job(tmp_path_factory: pytest.TempPathFactory, shapes_dataset: Path) -> Path:
    """A tiny job folder (config.yaml + dataset/) that trains 2 epochs in a few seconds."""
    import shutil

    job = tmp_path_factory.mktemp("jobs") / "shapes-tiny"
    shutil.copytree(shapes_dataset, job / "dataset")
    (job / "config.yaml").write_text(
        "model: yolo11n.yaml\nepochs: 2\nimgsz: 64\nbatch: 8\nworkers: 0\nplots: false\n"
        "instance_type: g5.xlarge\ncapacity: spot\nmax_interruptions: 2\nstall_hours: 0.1\n"
        "max_hours: 1\ntarget: {metric: recall, min: 0.5}\n"
    )
    return job
