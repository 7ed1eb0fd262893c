"""The trainer's small parts: preflight messages, heartbeat pacing and token expiry, results restore."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from trainer_world import token_machine

from spotyolo.contract.errors import PreflightFailed
from spotyolo.trainer import checkpoint, preflight
from spotyolo.trainer.main import EnvironmentInvalid, TrainerEnv
from spotyolo.trainer.outcome import TaskGone
from spotyolo.trainer.task import TaskChannel, heartbeat_interval

GIB = 1024**3


def _facts(**kw) -> preflight.MachineFacts:
    base = {
        "cuda_available": True,
        "cuda_devices": 1,
        "cuda_error": None,
        "free_disk": 100 * GIB,
        "shm_bytes": 8 * GIB,
    }
    return preflight.MachineFacts(**{**base, **kw})


def _check(facts: preflight.MachineFacts, **kw) -> None:
    args = {
        "need_gpu": True,
        "gpus": 1,
        "dataset_bytes": 1 * GIB,
        "present_bytes": 0,
        "workers": 8,
        "batch": 16,
        "imgsz": 640,
        "why_gpu": "SPOTYOLO_EXPECT_GPU=1 on this instance",
    }
    preflight.check(facts, **{**args, **kw})


def test_preflight_passes_on_a_good_machine():
    _check(_facts())


def test_preflight_names_missing_gpu():
    with pytest.raises(
        PreflightFailed, match=r"found torch.cuda.is_available\(\) is False, 0 device.*needed 1"
    ):
        _check(_facts(cuda_available=False, cuda_devices=0))
    with pytest.raises(PreflightFailed, match="needed 2 CUDA"):
        _check(_facts(), gpus=2)


def test_preflight_disk_counts_only_what_is_still_to_download():
    with pytest.raises(PreflightFailed, match=r"found 2.0 GiB free, needed 6.0 GiB"):
        _check(_facts(free_disk=2 * GIB), dataset_bytes=5 * GIB)
    _check(_facts(free_disk=2 * GIB), dataset_bytes=5 * GIB, present_bytes=5 * GIB)


def test_preflight_small_shm_with_workers_says_ipc_host():
    with pytest.raises(PreflightFailed, match=r"found 64 MiB, needed \d+ MiB.*--ipc=host"):
        _check(_facts(shm_bytes=64 * 1024**2))
    _check(_facts(shm_bytes=64 * 1024**2), workers=0)  # no workers, no shared memory needed


def test_heartbeat_interval_fits_short_stall_windows():
    assert heartbeat_interval(7200) == 60
    assert heartbeat_interval(360) == 60
    assert heartbeat_interval(120) == 30
    assert heartbeat_interval(2) == 1
    assert heartbeat_interval(7200, override=0.5) == 0.5


def _running_task_token(sfn, sqs, name: str, heartbeat: int) -> str:
    """Start a waitForTaskToken execution and return its (real) task token."""
    machine, queue = token_machine(sfn, sqs, boto3.client("iam"), heartbeat=heartbeat, timeout=60)
    sfn.start_execution(stateMachineArn=machine, name=name, input="{}")
    while True:
        messages = sqs.receive_message(QueueUrl=queue).get("Messages", [])
        if messages:
            token = str(json.loads(messages[0]["Body"])["token"])
            break
    # moto sends the message before it registers the token's callback (AWS registers it first):
    # wait until the task takes a heartbeat, as AWS's would at once
    for _ in range(100):
        try:
            sfn.send_task_heartbeat(taskToken=token)
            return token
        except sfn.exceptions.InvalidToken:
            time.sleep(0.05)
    raise AssertionError("the task never took its token")


def test_channel_paces_heartbeats_and_an_expired_token_is_task_gone():
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        sfn, sqs = boto3.client("stepfunctions"), boto3.client("sqs")
        token = _running_task_token(sfn, sqs, "expiry", heartbeat=2)
        channel = TaskChannel(sfn, token, interval=10)
        assert channel.heartbeat(force=True)
        assert not channel.heartbeat()  # paced: too soon
        assert token not in repr(channel)
        time.sleep(3.0)  # HeartbeatSeconds=2 lapses: the task timed out
        with pytest.raises(TaskGone, match=r"InvalidToken|TaskTimedOut"):
            channel.heartbeat(force=True)
        assert channel.gone and not channel.heartbeat(force=True)


def test_channel_follows_a_replaced_token_of_its_own_attempt():
    """A retried Launch trainer task gets a new token (stored by launch): keep training."""
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        sfn, sqs = boto3.client("stepfunctions"), boto3.client("sqs")
        token = _running_task_token(sfn, sqs, "retried", heartbeat=30)
        stale = token[:-4] + "dead"
        channel = TaskChannel(sfn, stale, interval=10, refresh=lambda: token)
        assert channel.heartbeat(force=True) and not channel.gone
        assert channel.succeed(json.dumps({"ok": True}))
        lonely = TaskChannel(sfn, stale, interval=10, refresh=lambda: stale)  # nothing newer
        with pytest.raises(TaskGone):
            lonely.heartbeat(force=True)


def test_results_restore_keeps_each_finished_epoch_once(tmp_path: Path):
    uploaded = "epoch,time,train/box_loss\n1,1.0,2.5\n2,2.0,2.1\n2,2.0,2.1\n3,3.0,1.9\n"
    out = tmp_path / "results.csv"
    assert checkpoint.restore_results(out, uploaded, finished=2) == 2
    assert out.read_text().splitlines() == ["epoch,time,train/box_loss", "1,1.0,2.5", "2,2.0,2.1"]


def _ckpt(path: Path, epoch: int, epochs: int, *, best_epoch: int = 0, patience: int = 100, **extra) -> Path:
    import torch

    doc = {
        "epoch": epoch,
        "optimizer": {"state": {}},
        "best_fitness": 0.5,
        "stopper": {"best_fitness": 0.5, "best_epoch": best_epoch},
        "train_args": {"epochs": epochs, "patience": patience},
        **extra,
    }
    torch.save(doc, path)
    return path


def test_a_checkpoint_of_the_last_epoch_or_an_early_stop_is_a_finished_run(tmp_path: Path):
    """Issue 9, hole 2: such a checkpoint is validated and reported, never trained from 0 again."""
    middle = checkpoint.inspect(_ckpt(tmp_path / "a.pt", 0, 3, best_epoch=1))
    assert middle == checkpoint.ResumeInfo(finished=1, epochs=3, done=False, best_epoch=1)
    last = checkpoint.inspect(_ckpt(tmp_path / "b.pt", 2, 3, best_epoch=2))
    assert last is not None and last.done and last.finished == 3
    stopped = checkpoint.inspect(_ckpt(tmp_path / "c.pt", 5, 10, best_epoch=3, patience=3))
    assert stopped is not None and stopped.done and stopped.finished == 6
    assert checkpoint.inspect(_ckpt(tmp_path / "d.pt", -1, 3, optimizer=None)) is None  # stripped


def test_a_best_pt_ahead_of_last_pt_keeps_its_fitness(tmp_path: Path):
    """best.pt goes up before last.pt: cut between the two, the resume must not replace it."""
    import torch

    last = _ckpt(tmp_path / "last.pt", 3, 10)
    best = _ckpt(tmp_path / "best.pt", 4, 10, best_fitness=0.8)
    checkpoint.rewrite_paths(last, data=tmp_path / "data.yaml", save_dir=tmp_path / "train", best=best)
    assert torch.load(last, weights_only=False)["best_fitness"] == 0.8
    _ckpt(best, 2, 10, best_fitness=0.1)  # an older best: the checkpoint's own stays
    _ckpt(last, 3, 10)
    checkpoint.rewrite_paths(last, data=tmp_path / "data.yaml", save_dir=tmp_path / "train", best=best)
    assert torch.load(last, weights_only=False)["best_fitness"] == 0.5


def test_best_pt_is_uploaded_before_last_pt_and_only_when_it_changed(tmp_path: Path):
    import os

    from spotyolo.trainer.monitor import CheckpointUploader

    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="ckpt")
        puts: list[str] = []
        s3.meta.events.register(
            "before-parameter-build.s3.PutObject", lambda params, **_: puts.append(params["Key"])
        )
        uploader = CheckpointUploader(s3, "ckpt", "ck/last.pt", "art/results.csv", best_key="ck/best.pt")
        weights = tmp_path / "weights"
        weights.mkdir()
        last, best, csv = weights / "last.pt", weights / "best.pt", tmp_path / "results.csv"
        for path in (last, best, csv):
            path.write_text(path.name)
        assert uploader.submit(last, csv, best)
        uploader.wait()
        assert not uploader.submit(last, csv, best)  # nothing changed: not uploaded twice
        os.utime(last, ns=(1, 1))  # the next epoch's last.pt; best.pt unchanged: not again
        assert uploader.submit(last, csv, best)
        uploader.wait()
        os.utime(last, ns=(2, 2))
        os.utime(best, ns=(2, 2))  # rewritten by a better epoch
        uploader.submit(last, csv, best)
        uploader.wait()
        first, unchanged, rewritten = puts[:3], puts[3:5], puts[5:]
        assert first == ["ck/best.pt", "ck/last.pt", "art/results.csv"]
        assert unchanged == ["ck/last.pt", "art/results.csv"]
        assert rewritten == first
        uploader.known_best(best)  # put back from S3 on a resume: already there
        os.utime(last, ns=(3, 3))
        uploader.submit(last, csv, best)
        uploader.wait()
        assert puts[-2:] == ["ck/last.pt", "art/results.csv"] and len(puts) == 10
        assert s3.get_object(Bucket="ckpt", Key="ck/best.pt")["Body"].read() == b"best.pt"
        assert uploader.uploads == 4


def test_a_checkpoint_upload_never_blocks_the_training_thread_and_the_newest_wins(tmp_path: Path):
    """A slow S3: ``submit`` returns at once; a request queued behind a running upload is
    replaced by a newer one, so S3 ends with the newest checkpoint and none is sent out of order."""
    import os

    from spotyolo.trainer.monitor import CheckpointUploader

    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="ckpt")
        bodies: list[bytes] = []

        def slow_put(params: Any, **_: Any) -> None:
            if params["Key"] == "ck/last.pt":
                body = params["Body"]
                bodies.append(body.read() if hasattr(body, "read") else body)
                if hasattr(body, "seek"):
                    body.seek(0)
                time.sleep(1.0)

        s3.meta.events.register("before-parameter-build.s3.PutObject", slow_put)
        uploader = CheckpointUploader(s3, "ckpt", "ck/last.pt", "art/results.csv")
        last, csv = tmp_path / "last.pt", tmp_path / "results.csv"
        csv.write_text("epoch\n")
        started = time.monotonic()
        for n in range(3):
            last.write_text(f"epoch {n}")
            os.utime(last, ns=(n + 1, n + 1))
            assert uploader.submit(last, csv)
            time.sleep(0.1)
        assert time.monotonic() - started < 0.8, "submit waited for an upload"
        uploader.wait()
        assert bodies == [b"epoch 0", b"epoch 2"]  # epoch 1 was replaced while epoch 0 went up
        assert s3.get_object(Bucket="ckpt", Key="ck/last.pt")["Body"].read() == b"epoch 2"


def test_environment_contract_errors_name_the_variable(tmp_path: Path):
    env = {
        "JOB": "shapes",
        "RUN_ID": "r1",
        "ATTEMPT": "1",
        "BUCKET": "b",
        "JOB_TABLE": "t",
        "SPOTYOLO_WORKDIR": str(tmp_path),
    }
    assert TrainerEnv.from_env(env).attempt == 1
    with pytest.raises(EnvironmentInvalid, match="JOB_TABLE"):
        TrainerEnv.from_env({k: v for k, v in env.items() if k != "JOB_TABLE"})
    with pytest.raises(EnvironmentInvalid, match="ATTEMPT='zero'"):
        TrainerEnv.from_env({**env, "ATTEMPT": "zero"})
    with pytest.raises(EnvironmentInvalid, match="JOB: job name 'Bad/Name'"):
        TrainerEnv.from_env({**env, "JOB": "Bad/Name"})


def test_a_run_finished_by_a_later_attempt_still_gets_its_results_png(tmp_path: Path):
    """The attempt that only validates a finished run trains no epoch, so Ultralytics draws no
    results.png: the trainer draws it from the restored results.csv (and a bad CSV costs
    nothing but a warning)."""
    from spotyolo.trainer.main import draw_results

    columns = ["epoch", "time", "train/box_loss", "train/cls_loss"]
    columns += ["metrics/precision(B)", "metrics/recall(B)"]
    rows = [[1, 3.1, 1.9, 3.2, 0.01, 0.02], [2, 6.0, 1.7, 2.9, 0.05, 0.10], [3, 9.2, 1.5, 2.5, 0.2, 0.4]]
    csv = tmp_path / "results.csv"
    csv.write_text("\n".join(",".join(map(str, r)) for r in [columns, *rows]) + "\n")
    drawn = draw_results(csv)
    assert drawn == tmp_path / "results.png" and drawn.read_bytes().startswith(b"\x89PNG")
    assert draw_results(tmp_path / "missing" / "results.csv") is None


def test_the_dataset_download_gets_small_files_whole_big_ones_in_parts_and_retries_a_broken_body(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small files come with one GetObject (the transfer manager's set-up per file cost more
    than the file); a body that broke off while read is asked for again, as the transfer
    manager would; a file at the multipart threshold still goes through the transfer manager."""
    from botocore.exceptions import IncompleteReadError

    from spotyolo.contract import layout
    from spotyolo.trainer import data

    monkeypatch.setattr(data, "SINGLE_GET_BYTES", 1000)
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="bucket")
        prefix = layout.dataset_prefix("j")
        files = {"data.yaml": b"names: [a]\n", "train/images/big.jpg": bytes(range(256)) * 8}
        for name, body in files.items():
            s3.put_object(Bucket="bucket", Key=prefix + name, Body=body)
        gets: list[str] = []
        broken = {"data.yaml"}
        real_get = s3.get_object

        def get_object(**kwargs: Any) -> Any:
            gets.append(kwargs["Key"])
            answer = real_get(**kwargs)
            name = kwargs["Key"][len(prefix) :]
            if name in broken:  # the first read of this body breaks off
                broken.discard(name)

                class Broken:
                    def read(self) -> bytes:
                        raise IncompleteReadError(actual_bytes=1, expected_bytes=len(files[name]))

                answer["Body"] = Broken()
            return answer

        heads: list[str] = []
        real_head = s3.head_object

        def head_object(**kwargs: Any) -> Any:  # the transfer manager's first call
            heads.append(kwargs["Key"])
            return real_head(**kwargs)

        monkeypatch.setattr(s3, "get_object", get_object)
        monkeypatch.setattr(s3, "head_object", head_object)
        listed, downloaded, size = data.download_dataset(s3, "bucket", "j", tmp_path)
    assert (listed, downloaded, size) == (2, 2, sum(len(b) for b in files.values()))
    for name, body in files.items():
        assert (tmp_path / name).read_bytes() == body
    assert sorted(gets) == [prefix + "data.yaml", prefix + "data.yaml", prefix + "train/images/big.jpg"]
    assert heads == [prefix + "train/images/big.jpg"], "only the big file goes through the transfer manager"
    assert not list(tmp_path.rglob("*.part"))
