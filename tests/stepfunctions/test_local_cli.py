"""`spotyolo local` without training: bad jobs fail before anything starts, and `spotyolo local
serve` answers the real AWS CLI (the README's commands)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spotyolo.local.cli import check_job_dir
from spotyolo.local.engine import free_port

BIN = Path(sys.executable).parent


def spotyolo(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "spotyolo"), *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def test_a_bad_job_fails_before_the_emulator_starts(tmp_path: Path, shapes_job: Path) -> None:
    job = tmp_path / "bad-job"
    (job / "dataset").mkdir(parents=True)
    import shutil

    shutil.copytree(shapes_job / "dataset", job / "dataset", dirs_exist_ok=True)
    (job / "config.yaml").write_text("model: yolo11n.yaml\nepochs: 2\nimgzs: 64\n")
    started = time.monotonic()
    done = spotyolo("local", str(job), "--json", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "imgzs" in done.stderr and "imgsz" in done.stderr  # the key and the fix
    assert "nothing was started" in done.stderr
    summary = json.loads(done.stdout)
    assert summary["status"] == "invalid" and summary["job"] == "bad-job"
    assert time.monotonic() - started < 30
    assert not (tmp_path / "outputs").exists()


def test_the_folder_name_must_be_a_job_name(tmp_path: Path, shapes_job: Path) -> None:
    import shutil

    folder = tmp_path / "My Job"
    shutil.copytree(shapes_job, folder)
    job, problems = check_job_dir(folder)
    assert job == "My Job"
    assert len(problems) == 1 and "rename the folder" in problems[0] and "'my-job'" in problems[0]
    assert check_job_dir(shapes_job) == ("shapes-tiny", [])


def _aws(port: int, *args: str) -> dict:
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    env.pop("AWS_ENDPOINT_URL", None)
    done = subprocess.run(
        [str(BIN / "aws"), "--endpoint-url", f"http://127.0.0.1:{port}", "--output", "json", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    try:
        parsed: dict = json.loads(done.stdout)
    except ValueError:  # `aws s3 cp` prints progress lines, not JSON
        return {"text": done.stdout}
    return parsed


@pytest.fixture
def served(tmp_path: Path) -> tuple[subprocess.Popen[str], int, str]:
    port = free_port()
    process = subprocess.Popen(
        [str(BIN / "spotyolo"), "local", "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    banner = ""
    assert process.stdout is not None
    deadline = time.monotonic() + 90
    while "Get the weights" not in banner and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        banner += line
    if "Get the weights" not in banner:
        process.kill()
        pytest.fail(f"serve did not come up:\n{banner}")
    yield process, port, banner
    if process.poll() is None:
        process.kill()
        process.wait()


def test_serve_answers_the_aws_cli_and_stops_on_ctrl_c(
    served: tuple[subprocess.Popen[str], int, str], tmp_path: Path
) -> None:
    process, port, banner = served
    machine = next(line.split()[-1] for line in banner.splitlines() if "state machine" in line)
    assert (
        f"aws --endpoint-url http://127.0.0.1:{port} s3 cp my-job s3://spotyolo-local/jobs/my-job/" in banner
    )

    # an upload with the CLI triggers an execution (refused here: the config is invalid)
    job = tmp_path / "cli-job"
    job.mkdir()
    (job / "config.yaml").write_text("model: yolo11n.yaml\nepochz: 3\n")
    copied = _aws(port, "s3", "cp", str(job), "s3://spotyolo-local/jobs/cli-job/", "--recursive")
    assert "jobs/cli-job/config.yaml" in copied["text"]
    deadline = time.monotonic() + 60
    executions: list[dict] = []
    while time.monotonic() < deadline:
        executions = _aws(port, "stepfunctions", "list-executions", "--state-machine-arn", machine)[
            "executions"
        ]
        if executions and executions[0]["status"] != "RUNNING":
            break
        time.sleep(1)
    assert len(executions) == 1 and executions[0]["status"] == "FAILED"
    history = _aws(
        port, "stepfunctions", "get-execution-history", "--execution-arn", executions[0]["executionArn"]
    )
    entered = [
        e["stateEnteredEventDetails"]["name"] for e in history["events"] if "stateEnteredEventDetails" in e
    ]
    assert entered[0] == "Validate job" and "Launch trainer" not in entered

    # a manual start with the README's input shape
    started = _aws(
        port,
        "stepfunctions",
        "start-execution",
        "--state-machine-arn",
        machine,
        "--input",
        json.dumps({"job": "cli-job", "force": True}),
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        described = _aws(
            port, "stepfunctions", "describe-execution", "--execution-arn", started["executionArn"]
        )
        if described["status"] != "RUNNING":
            break
        time.sleep(1)
    assert described["status"] == "FAILED"  # the same invalid config, read from the bucket

    # the spotyolo commands find the served emulator by its endpoint alone (its stack outputs)
    status = spotyolo("status", "--json", "--endpoint-url", f"http://127.0.0.1:{port}", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert isinstance(json.loads(status.stdout), list)  # the job table, found through the stack
    unknown = spotyolo("logs", "cli-job", "--endpoint-url", f"http://127.0.0.1:{port}", cwd=tmp_path)
    assert unknown.returncode == 4 and "unknown job 'cli-job'" in unknown.stderr

    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 0
    assert "emulator stopped" in out


def test_serve_answers_nothing_before_the_pipeline_is_deployed(tmp_path: Path) -> None:
    """A new user starts `serve` in the background, waits until `s3 ls` answers and uploads at
    once: the upload must start an execution (it was lost when the emulator answered while the
    rules were still being deployed)."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError, EndpointConnectionError

    port = free_port()
    process = subprocess.Popen(
        [str(BIN / "spotyolo"), "local", "serve", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    try:
        kwargs = {
            "region_name": "us-east-1",
            "endpoint_url": f"http://127.0.0.1:{port}",
            "aws_access_key_id": "local",
            "aws_secret_access_key": "local",
            "config": Config(retries={"total_max_attempts": 1}, read_timeout=400),
        }
        s3, sfn = boto3.client("s3", **kwargs), boto3.client("stepfunctions", **kwargs)
        deadline = time.monotonic() + 120
        while True:  # `aws s3 ls s3://spotyolo-local`, as fast as a script would poll
            try:
                s3.list_objects_v2(Bucket="spotyolo-local")
                break
            except (EndpointConnectionError, ClientError):
                assert time.monotonic() < deadline, "serve never answered"
                time.sleep(0.05)
        s3.put_object(Bucket="spotyolo-local", Key="jobs/early/config.yaml", Body=b"model: yolo11n.yaml\n")
        machine = "arn:aws:states:us-east-1:123456789012:stateMachine:spotyolo-training-pipeline"
        deadline = time.monotonic() + 60
        executions: list = []
        while not executions and time.monotonic() < deadline:
            executions = sfn.list_executions(stateMachineArn=machine)["executions"]
            time.sleep(0.5)
        assert executions and executions[0]["name"].startswith("early-R"), "the early upload was lost"
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_the_sample_job_draws_plots_and_the_output_names_them(tmp_path: Path) -> None:
    import yaml

    from spotyolo.core.models import JobConfig
    from spotyolo.local.cli import copied_lines

    sample = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples/shapes/config.yaml").read_text())
    assert JobConfig(**sample).train_args().get("plots", True) is True  # Ultralytics' default: on
    names = ["best.pt", "last.pt", "metrics.json", "results.csv", "plots/results.png"]
    names += ["plots/confusion_matrix.png", "plots/BoxPR_curve.png", "plots/BoxF1_curve.png"]
    names += [
        "plots/val_batch0_pred.jpg",
        "plots/labels.jpg",
        "previous/best.pt",
        "previous/plots/results.png",
    ]
    out = tmp_path / "shapes"
    assert copied_lines("shapes", out, names) == [
        f"weights/shapes/ copied to {out}/ (best.pt, last.pt, metrics.json, previous/best.pt, results.csv)",
        f"plots: {out}/plots/ (results.png, confusion_matrix.png, BoxPR_curve.png, BoxF1_curve.png, ...)",
    ]
    assert copied_lines("shapes", out, ["best.pt"]) == [f"weights/shapes/ copied to {out}/ (best.pt)"]


def test_max_instances_reaches_the_engine_of_local_and_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--max-instances N` is the emulated account's quota of both commands (default: none)."""
    from types import SimpleNamespace

    from spotyolo.cli import build_parser
    from spotyolo.local import cli as local_cli
    from spotyolo.local import engine as engine_module

    made: list[dict] = []

    class Started(Exception):
        pass

    class FakeEngine:
        def __init__(self, **kwargs: object) -> None:
            made.append(kwargs)
            self.quota_instances = kwargs.get("quota_instances")
            self.endpoint = "http://127.0.0.1:1"
            self.resources = SimpleNamespace(bucket="b", state_machine_arn="sm", table="t", topic_arn="tp")

        def start(self) -> None:
            raise Started

        def stop(self) -> None:
            pass

    monkeypatch.setattr(engine_module, "LocalEngine", FakeEngine)
    parser = build_parser()
    with pytest.raises(Started):
        local_cli.run_serve(parser.parse_args(["local", "serve", "--max-instances", "2"]))
    assert made[-1]["quota_instances"] == 2
    with pytest.raises(Started):
        local_cli.run_serve(parser.parse_args(["local", "serve"]))
    assert made[-1]["quota_instances"] is None
    assert "EC2 quotas     2 instances at once" in local_cli.serve_banner(FakeEngine(quota_instances=2))
    assert "EC2 quotas" not in local_cli.serve_banner(FakeEngine())
    with pytest.raises(SystemExit):
        parser.parse_args(["local", "serve", "--max-instances", "-1"])
