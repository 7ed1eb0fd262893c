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
# parallel workers (make test) share the cores: torch in each (and in the trainer processes it
# starts) gets its share instead of one thread per core each, which oversubscribes the machine
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _share = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ.setdefault("OMP_NUM_THREADS", str(_share))


# every moto test's new boto3 session parses botocore's JSON models again: share them
from spotyolo.local import botocache  # noqa: E402

botocache.install()


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


#: modules that share the session's one CDK synth: kept on one xdist worker, so a parallel run
#: still synthesizes once
_ONE_SYNTH = "tests/infrastructure/"

#: the longest modules (whole pipelines, real training), started first so that no worker is
#: left with one of them at the end while the other idles; longest first
_LONGEST_FIRST = (
    "tests/e2e/test_pipeline.py",
    _ONE_SYNTH,
    "tests/stepfunctions/test_ops_cli.py",
    "tests/stepfunctions/test_chaos.py",
    "tests/stepfunctions/test_queue_chaos.py",
    "tests/stepfunctions/test_workflow.py",
    "tests/stepfunctions/test_local_cli.py",
    "tests/container/test_trainer_runs.py",
)


def _module(item: pytest.Item) -> str:
    return item.nodeid.split("::", 1)[0]


def _start_rank(module: str) -> int:
    ranks = (i for i, prefix in enumerate(_LONGEST_FIRST) if module.startswith(prefix))
    return next(ranks, len(_LONGEST_FIRST))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``pytest -n`` (``make test``), one worker runs a whole module: a module's emulator
    world is built once, as in a serial run, and the CDK modules share one worker's synth. The
    longest modules come first (a stable sort: a module's tests keep their order)."""
    items.sort(key=lambda item: _start_rank(_module(item)))
    for item in items:
        module = _module(item)
        item.add_marker(pytest.mark.xdist_group("cdk-synth" if module.startswith(_ONE_SYNTH) else module))
