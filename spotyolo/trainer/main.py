"""``python -m spotyolo.trainer``: one training attempt of one job run, start to answer.

Environment (docs/ARCHITECTURE.md, "The trainer"):

==============================  ==========================================================
``JOB``, ``RUN_ID``             the job and its run: the trainer reads runs/<job>/<run_id>/job.json
``ATTEMPT``                     the attempt number (1-based); its task token is in the job table
``BUCKET``, ``JOB_TABLE``       the pipeline's bucket and DynamoDB job table
``AWS_REGION``                  (or ``AWS_DEFAULT_REGION``)
``AWS_ENDPOINT_URL``            optional: every AWS client goes there (the local emulator)
``AWS_EC2_METADATA_SERVICE_ENDPOINT``  optional: the metadata service to watch (a fake one locally)
``SPOTYOLO_WORKDIR``            where the dataset and the run go (default /opt/spotyolo/work if
                                writable, else a temporary folder)
``SPOTYOLO_EXPECT_GPU=1``       fail preflight without a usable GPU (the GPU instance's user data)
``SPOTYOLO_HEARTBEAT_SECONDS``  override the heartbeat interval (default min(60, stall_seconds/4))
``SPOTYOLO_IMDS_POLL_SECONDS``  override the metadata poll interval (default 5)
``SPOTYOLO_INTERRUPT_GRACE_SECONDS``  how long the watcher waits for the training thread to save
                                a mid-epoch checkpoint before it answers SpotInterrupted itself
                                (default 30; the answer must leave within 60 s of the notice).
                                A run that is finishing (final validation, artifact upload)
                                has until the notice's action time less a margin instead
``SPOTYOLO_CHECKPOINT_SECONDS``  override config.yaml's ``checkpoint_minutes`` with a period in
                                seconds (tests and benches)
``YOLO_CONFIG_DIR``             Ultralytics settings/font folder (default <workdir>/yolo-config)
==============================  ==========================================================

Exit codes: see :class:`spotyolo.trainer.outcome.ExitCode` (0 success, 2 bad environment, 3 no token,
10 TrainerError, 11 DatasetError, 12 PreflightFailed, 13 TrainingDiverged, 14 SpotInterrupted,
20 the task is gone, 1 the trainer itself crashed).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spotyolo.contract import layout
from spotyolo.contract.env import TRAINER_REQUIRED, TrainerVar
from spotyolo.contract.errors import (
    DatasetError,
    ErrorName,
    PreflightFailed,
    SpotyoloError,
    TrainerError,
    TrainingDiverged,
)
from spotyolo.core.jobtable import JobTable
from spotyolo.core.models import JobSpec, TrainResult
from spotyolo.trainer import checkpoint, data, preflight
from spotyolo.trainer.monitor import RunRef, TrainingMonitor, short_metrics
from spotyolo.trainer.outcome import FAILURE_EXIT, ExitCode, StopForInterruption, TaskGone
from spotyolo.trainer.task import TaskChannel, attempt_token, heartbeat_interval
from spotyolo.trainer.watcher import InterruptionWatcher, MetadataClient, Notice

if TYPE_CHECKING:  # the stubs are a development dependency: not in the trainer image
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_stepfunctions import SFNClient

log = logging.getLogger("spotyolo.trainer")

DEFAULT_WORKDIR = Path("/opt/spotyolo/work")
LOG_NAME = "trainer.log"
TRACEBACK_LINES = 25
REQUIRED_ENV = TRAINER_REQUIRED
#: what a finishing run leaves of the notice's two minutes for the answer and the log upload
#: (at most a quarter of the time left, for the local engine's short notices)
FINISH_MARGIN_SECONDS = 20.0
#: the validation arguments a final validation takes from the run's training arguments
VAL_ARGS = ("imgsz", "single_cls", "classes", "iou", "max_det", "half", "agnostic_nms", "workers", "plots")


class EnvironmentInvalid(Exception):
    """The environment contract is not met; nothing can be reported to the state machine."""


@dataclass
class TrainerEnv:
    job: str
    run_id: str
    attempt: int
    bucket: str
    table: str
    region: str | None
    workdir: Path
    expect_gpu: bool = False
    heartbeat_seconds: float | None = None
    imds_poll_seconds: float = 5.0
    interrupt_grace_seconds: float = 30.0
    #: overrides config.yaml's checkpoint_minutes (tests and benches: a period in seconds)
    checkpoint_seconds: float | None = None
    endpoint_url: str | None = None
    imds_endpoint: str | None = None

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> TrainerEnv:
        env = dict(os.environ if environ is None else environ)
        missing = [name for name in REQUIRED_ENV if not env.get(name)]
        if missing:
            raise EnvironmentInvalid(
                f"missing environment variable(s) {', '.join(missing)}: python -m spotyolo.trainer needs "
                + ", ".join(REQUIRED_ENV)
                + " (set by the instance's user data or the local engine)"
            )
        try:
            layout.check_job_name(env[TrainerVar.JOB])
        except SpotyoloError as err:
            raise EnvironmentInvalid(f"JOB: {err}") from None
        try:
            attempt = int(env[TrainerVar.ATTEMPT])
            if attempt < 1:
                raise ValueError
        except ValueError:
            raise EnvironmentInvalid(f"ATTEMPT={env['ATTEMPT']!r} is not a positive integer") from None

        def number(name: str, default: float | None) -> float | None:
            raw = env.get(name)
            if not raw:
                return default
            try:
                return float(raw)
            except ValueError:
                raise EnvironmentInvalid(f"{name}={raw!r} is not a number of seconds") from None

        return cls(
            job=env[TrainerVar.JOB],
            run_id=env[TrainerVar.RUN_ID],
            attempt=attempt,
            bucket=env[TrainerVar.BUCKET],
            table=env[TrainerVar.JOB_TABLE],
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
            workdir=_workdir(env.get(TrainerVar.WORKDIR)),
            expect_gpu=env.get(TrainerVar.EXPECT_GPU, "").lower() in ("1", "true", "yes"),
            heartbeat_seconds=number(TrainerVar.HEARTBEAT_SECONDS, None),
            imds_poll_seconds=number(TrainerVar.IMDS_POLL_SECONDS, 5.0) or 5.0,
            interrupt_grace_seconds=number(TrainerVar.INTERRUPT_GRACE_SECONDS, 30.0) or 30.0,
            checkpoint_seconds=number(TrainerVar.CHECKPOINT_SECONDS, None),
            endpoint_url=env.get("AWS_ENDPOINT_URL"),
            imds_endpoint=env.get(TrainerVar.IMDS_ENDPOINT),
        )


def _workdir(value: str | None) -> Path:
    if value:
        path = Path(value)
    else:
        try:
            DEFAULT_WORKDIR.mkdir(parents=True, exist_ok=True)
            probe = DEFAULT_WORKDIR / ".write-test"
            probe.touch()
            probe.unlink()
            path = DEFAULT_WORKDIR
        except OSError:
            path = Path(tempfile.mkdtemp(prefix="spotyolo-work-"))
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


@dataclass
class Clients:
    s3: S3Client
    dynamodb: DynamoDBClient
    sfn: SFNClient

    @classmethod
    def create(cls, region: str | None) -> Clients:
        import boto3
        from botocore.config import Config

        config = Config(retries={"max_attempts": 8, "mode": "standard"}, connect_timeout=10, read_timeout=60)
        session = boto3.session.Session(region_name=region)
        return cls(
            s3=session.client("s3", config=config),
            dynamodb=session.client("dynamodb", config=config),
            sfn=session.client("stepfunctions", config=config),
        )


def _setup_logging(log_file: Path) -> logging.Handler:
    """Progress to stdout and to the run log (uploaded as an artifact), token-free."""
    formatter = logging.Formatter(
        "%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S"
    )
    file_handler = logging.FileHandler(log_file, encoding="utf-8")
    file_handler.setFormatter(formatter)
    logger = logging.getLogger("spotyolo.trainer")
    logger.setLevel(logging.INFO)
    if not any(getattr(h, "_spotyolo_stdout", False) for h in logger.handlers):
        stream = logging.StreamHandler(sys.stdout)
        stream.setFormatter(formatter)
        stream._spotyolo_stdout = True  # type: ignore[attr-defined]
        logger.addHandler(stream)
    logger.addHandler(file_handler)
    logging.getLogger("ultralytics").addHandler(file_handler)
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):  # DEBUG would print request bodies
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return file_handler


def _traceback_tail(err: BaseException, lines: int = TRACEBACK_LINES) -> str:
    text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _classify(err: BaseException) -> str:
    """The error name for an exception that is not one of ours: dataset trouble or anything else."""
    if isinstance(err, DatasetError):
        return ErrorName.DATASET_ERROR
    text = str(err)
    if text.startswith("Dataset '") or "images not found" in text or "No labels found" in text:
        return ErrorName.DATASET_ERROR
    frames = traceback.extract_tb(err.__traceback__)
    if frames and any(f"ultralytics{os.sep}data{os.sep}" in frame.filename for frame in frames[-3:]):
        return ErrorName.DATASET_ERROR
    return ErrorName.TRAINER_ERROR


class TrainerRun:
    """This process's attempt at training the job (not the plan of an attempt,
    :class:`spotyolo.core.models.Attempt`); :meth:`run` returns the exit code."""

    def __init__(
        self,
        env: TrainerEnv,
        clients: Clients,
        *,
        extra_callbacks: dict[str, list[Callable[[Any], None]]] | None = None,
        hard_exit: Callable[[int], None] = os._exit,
    ) -> None:
        self.env = env
        self.clients = clients
        self.table = JobTable(clients.dynamodb, env.table)
        self.ref = RunRef(env.job, env.run_id, env.attempt, env.bucket)
        self.extra_callbacks = extra_callbacks or {}
        self.hard_exit = hard_exit
        self.root = env.workdir / env.job / env.run_id
        self.root.mkdir(parents=True, exist_ok=True)
        self.log_file = self.root / LOG_NAME
        self.channel: TaskChannel | None = None
        self.watcher: InterruptionWatcher | None = None
        self.monitor: TrainingMonitor | None = None
        self.spec: JobSpec | None = None
        self.result: TrainResult | None = None
        #: true when an earlier attempt of this run had finished training: its result is re-sent
        self.reused_result = False
        #: set once training is over: final validation and artifact upload are all that is left
        self.finishing = threading.Event()
        self._done = threading.Event()

    # ------------------------------------------------------------ the whole attempt

    def run(self) -> int:
        handler = _setup_logging(self.log_file)
        try:
            return self._run()
        finally:
            self._done.set()
            if self.watcher is not None:
                self.watcher.stop()
            logging.getLogger("spotyolo.trainer").removeHandler(handler)
            logging.getLogger("ultralytics").removeHandler(handler)
            handler.close()

    def _run(self) -> int:
        env = self.env
        log.info("trainer: job %s run %s attempt %d", env.job, env.run_id, env.attempt)
        prewarm()
        read_token = attempt_token(self.table, env.job, env.run_id, env.attempt)
        token = read_token()
        if not token:
            log.error(
                "no task token for attempt %d of job %s in table %s: it is not the job's current attempt "
                "(the run moved on or was cancelled); nothing to do",
                env.attempt,
                env.job,
                env.table,
            )
            return ExitCode.NO_TOKEN
        self.channel = TaskChannel(
            self.clients.sfn,
            token,
            env.heartbeat_seconds or 60.0,
            refresh=read_token,
        )
        try:
            self.channel.heartbeat(force=True)  # boot is progress
            self._start_watcher()
            result = self._train()
            self.result = result
            if not self.reused_result:  # keep the log of the attempt that trained
                self._upload_log()
            return self._send_success(self.channel, result)
        except TaskGone as err:
            log.error("%s: stopping at once", err)
            return ExitCode.TASK_GONE
        except StopForInterruption as err:  # its checkpoint upload was waited for
            log.warning("%s: SpotInterrupted sent, exiting", err)
            self._upload_log()
            return ExitCode.SPOT_INTERRUPTED
        except BaseException as err:  # every failure is reported before the instance goes away
            if isinstance(err, PreflightFailed | TrainingDiverged | DatasetError):
                name, cause = err.error_name, str(err)
            elif isinstance(err, TrainerError):
                name, cause = ErrorName.TRAINER_ERROR, str(err)
            else:
                name, cause = _classify(err), _traceback_tail(err)
            log.error("%s: %s", name, cause if isinstance(err, SpotyoloError) else _traceback_tail(err))
            self._finish_uploads()  # the last good checkpoint must be in S3 before the answer
            try:
                sent = self.channel.fail(name, cause)
            except TaskGone as gone:
                log.error("%s", gone)
                return ExitCode.TASK_GONE
            except Exception as send_error:  # Step Functions unreachable even after retries
                log.error("could not send %s: %s", name, send_error)
                return ExitCode.CRASHED
            if not sent:  # the watcher answered first (SpotInterrupted)
                return FAILURE_EXIT.get(self.channel.final or "", ExitCode.TRAINER_ERROR)
            self._upload_log()
            if isinstance(err, KeyboardInterrupt | SystemExit):
                raise
            return FAILURE_EXIT[name]

    def _send_success(self, channel: TaskChannel, result: TrainResult) -> int:
        if not channel.succeed(result.model_dump_json()):  # the watcher answered first
            log.warning("the result was not sent: %s was answered first", channel.final)
            return FAILURE_EXIT.get(channel.final or "", ExitCode.TRAINER_ERROR)
        log.info("success sent: %s", json.dumps(result.metrics))
        return ExitCode.SUCCESS

    # ------------------------------------------------------------ interruption watcher

    def _start_watcher(self) -> None:
        client = MetadataClient(self.env.imds_endpoint)
        self.watcher = InterruptionWatcher(client, self.env.imds_poll_seconds, on_notice=self._on_notice)
        self.watcher.start()

    def notice(self) -> Notice | None:
        return self.watcher.notice if self.watcher is not None else None

    def _on_notice(self, notice: Notice) -> None:
        """Watcher thread: give the training thread its time, then answer for it."""
        if self._training_thread_answers(notice):
            return
        if self._done.is_set() or self.channel is None or self.channel.final is not None:
            return
        if self.monitor is not None and self.monitor.interrupt_started.is_set():
            return
        if self.monitor is not None:  # the last epoch's checkpoint first, if it is still going up
            self.monitor.uploader.settle(5.0)
        cause = self._interruption_cause(notice)
        log.warning("%s", cause)
        try:
            sent = self.channel.fail(ErrorName.SPOT_INTERRUPTED, cause)
        except Exception as err:  # the process ends either way
            log.error("could not send SpotInterrupted: %s", err)
            sent = True
        if not sent:  # the training thread answered in the meantime: it ends the process
            return
        self._upload_log()
        self.hard_exit(ExitCode.SPOT_INTERRUPTED)

    def _training_thread_answers(self, notice: Notice) -> bool:
        """Wait while the training thread may still handle the notice; True when it did (or the
        attempt ended). An epoch gets the grace period to checkpoint; a run that is finishing
        gets the time left before the instance goes, less a margin for the answer."""
        grace_end = time.monotonic() + self.env.interrupt_grace_seconds
        while time.monotonic() < grace_end:
            if self._done.is_set() or (self.monitor is not None and self.monitor.interrupt_started.is_set()):
                return True
            if self.finishing.is_set():
                budget = self._finish_budget(notice)
                log.warning(
                    "spot interruption notice while finishing: %.0f s to validate and upload the result",
                    budget,
                )
                return self._done.wait(budget)
            time.sleep(0.2)
        return self._done.is_set()

    def _finish_budget(self, notice: Notice) -> float:
        left = notice.seconds_left()
        if left is None:  # no readable action time: the grace period is all that is known
            return self.env.interrupt_grace_seconds
        return max(0.0, left - min(FINISH_MARGIN_SECONDS, left / 4))

    def _interruption_cause(self, notice: Notice) -> str:
        head = f"spot interruption notice ({notice.action} at {notice.time})"
        if self.finishing.is_set():
            return (
                f"{head} while the run was finishing (final validation or artifact upload), which did not "
                "end before the instance goes; training is over and its last checkpoint is kept: the next "
                "attempt validates it and reports without training"
            )
        epoch = self.monitor.epoch_done + 1 if self.monitor is not None else 0
        return (
            f"{head}; the trainer was busy (setup, validation or a stuck batch) for "
            f"{self.env.interrupt_grace_seconds:.0f} s, so the last uploaded checkpoint is kept (epoch "
            f"{epoch}, or the one before if its upload was cut short)"
        )

    def _tick(self) -> None:
        """Download progress: heartbeat, and stop for a notice (nothing to checkpoint yet)."""
        assert self.channel is not None
        self.channel.heartbeat()
        notice = self.notice()
        if notice is not None:
            if self.monitor is not None:
                self.monitor.interrupt_started.set()
            self.channel.interrupted(
                f"spot interruption notice ({notice.action} at {notice.time}) before training started; "
                "any checkpoint of the run is kept"
            )

    # ------------------------------------------------------------ training

    def _read_spec(self) -> JobSpec:
        key = layout.job_json_key(self.env.job, self.env.run_id)
        try:
            body = self.clients.s3.get_object(Bucket=self.env.bucket, Key=key)["Body"].read()
            return JobSpec.model_validate_json(body)
        except Exception as err:
            raise TrainerError(
                f"cannot read the run's spec s3://{self.env.bucket}/{key}: {err}. It is written by the "
                "Validate job state; start the job again."
            ) from err

    def _train(self) -> TrainResult:
        env, s3 = self.env, self.clients.s3
        spec = self.spec = self._read_spec()
        assert self.channel is not None
        self.channel.interval = heartbeat_interval(spec.stall_seconds, env.heartbeat_seconds)
        config = spec.config
        args = config.train_args()
        log.info(
            "job spec: model %s, %d epochs, heartbeat every %.0f s",
            config.model,
            config.epochs,
            self.channel.interval,
        )

        finished = self._finished_run()
        if finished is not None:
            return finished

        dataset_dir = self.root / "dataset"
        self._preflight(spec, args, dataset_dir)

        from spotyolo.trainer.offline import prepare_ultralytics

        prepare_ultralytics(os.environ.get("YOLO_CONFIG_DIR") or (env.workdir / "yolo-config"))

        data.download_dataset(s3, env.bucket, env.job, dataset_dir, tick=self._tick)
        data_yaml = data.local_data_yaml(dataset_dir, self.root / layout.DATA_YAML)
        model_spec = self._model_file(config.model)

        save_dir = self.root / "train"
        ckpt_path = self.root / "checkpoints" / layout.LAST
        info = self._prepare_resume(ckpt_path, data_yaml, save_dir, args)
        resume = info is not None
        self._tick()
        if info is not None and info.done:
            return self._validate_finished(ckpt_path, data_yaml, save_dir, info)

        from ultralytics import YOLO

        from spotyolo.trainer.ultralytics_midepoch import MidEpoch, read_state

        midepoch = MidEpoch(read_state(ckpt_path) if resume else None)
        if info is not None and info.finished == 0 and not midepoch.enabled:
            # inside epoch 1, which Ultralytics' own resume cannot restart (another version)
            log.warning("the checkpoint is inside epoch 1 and cannot be continued here: starting over")
            resume = False
        self.monitor = TrainingMonitor(
            self.ref,
            s3=s3,
            table=self.table,
            channel=self.channel,
            notice=self.notice,
            finishing=self.finishing,
            checkpoint_seconds=env.checkpoint_seconds or config.checkpoint_minutes * 60,
            midepoch=midepoch,
        )
        model = YOLO(str(ckpt_path) if resume else model_spec)
        midepoch.attach(model)  # first: it tracks the batch the monitor may checkpoint
        self.monitor.attach(model)
        if resume:
            self.monitor.uploader.known_best(save_dir / "weights" / layout.BEST)
        self._add_extra_callbacks(model)
        if not args.get("save", True):
            log.warning("save: false ignored: the trainer needs last.pt every epoch to survive interruptions")
        args["save"] = True
        started = time.monotonic()
        if resume:
            # the path, not True: Model.train refuses resume=True for a checkpoint inside epoch 1 (epoch -1)
            metrics = model.train(resume=str(ckpt_path), data=str(data_yaml))
        else:
            metrics = model.train(
                **args, data=str(data_yaml), project=str(save_dir.parent), name=save_dir.name, exist_ok=True
            )
        seconds = time.monotonic() - started
        self.monitor.uploader.wait()
        return self._finish(model, metrics, seconds)

    def _add_extra_callbacks(self, model: Any) -> None:
        for event, callbacks in self.extra_callbacks.items():
            for callback in callbacks:
                model.add_callback(event, callback)

    def _preflight(self, spec: JobSpec, args: dict[str, Any], dataset_dir: Path) -> None:
        need_gpu = self.env.expect_gpu  # config.yaml may not choose a device: the instance decides
        facts = preflight.MachineFacts.probe(self.env.workdir, need_gpu)
        on_gpu = need_gpu or _cuda_visible()
        workers = int(args.get("workers", 8)) if on_gpu else 0  # Ultralytics uses 0 workers on the CPU
        present = (
            sum(p.stat().st_size for p in dataset_dir.rglob("*") if p.is_file())
            if dataset_dir.exists()
            else 0
        )
        preflight.check(
            facts,
            need_gpu=need_gpu,
            gpus=1,
            dataset_bytes=spec.dataset.bytes,
            present_bytes=present,
            workers=workers,
            batch=args.get("batch", 16),
            imgsz=args.get("imgsz", 640),
            why_gpu=f"{TrainerVar.EXPECT_GPU}=1 on this instance",
        )
        log.info(
            "preflight passed (gpu %s, %.1f GiB free disk)",
            "yes" if on_gpu else "no",
            facts.free_disk / 2**30,
        )

    def _model_file(self, model: str) -> str:
        """A model file uploaded with the job (jobs/<job>/<model>) is downloaded; names pass through."""
        if "/" in model or "\\" in model:
            raise TrainerError(
                f"config.yaml: model: {model!r} must be a file name in the job folder or a model name"
            )
        key = layout.job_prefix(self.env.job) + model
        local = self.root / "model" / model
        if data.download_if_exists(self.clients.s3, self.env.bucket, key, local):
            log.info("model: s3://%s/%s", self.env.bucket, key)
            return str(local)
        return model

    def _finished_run(self) -> TrainResult | None:
        """The result of this run if an earlier attempt finished training and uploaded it.

        That attempt died between its artifacts upload and SendTaskSuccess (its instance was
        lost): its ``last.pt`` is final and cannot be resumed, and training again from scratch
        would pay for the whole run twice. ``metrics.json`` is uploaded after the weights, so
        its presence means the artifacts are complete.
        """
        env, s3 = self.env, self.clients.s3
        metrics_key = layout.artifact_key(env.job, env.run_id, layout.METRICS_JSON)
        local = self.root / "previous-metrics.json"
        if not data.download_if_exists(s3, env.bucket, metrics_key, local):
            return None
        summary = json.loads(local.read_text())
        listed = s3.list_objects_v2(Bucket=env.bucket, Prefix=layout.artifacts_prefix(env.job, env.run_id))
        prefix = layout.artifacts_prefix(env.job, env.run_id)
        artifacts = {o["Key"][len(prefix) :]: o["Key"] for o in listed.get("Contents", [])}
        log.info(
            "run %s already finished training (attempt %s uploaded its artifacts): reporting that result",
            env.run_id,
            summary.get("attempt"),
        )
        self.reused_result = True
        self.finishing.set()
        return TrainResult(
            metrics=summary["metrics"],
            best_epoch=int(summary["best_epoch"]),
            epochs=int(summary["epochs"]),
            seconds=float(summary["seconds"]),
            attempt=env.attempt,
            artifacts=artifacts,
        )

    def _prepare_resume(
        self, ckpt_path: Path, data_yaml: Path, save_dir: Path, args: dict[str, Any]
    ) -> checkpoint.ResumeInfo | None:
        """Download the run's checkpoint (with its best.pt and results.csv) and make it this
        machine's; None when there is none to resume, so training starts from the beginning."""
        env, s3 = self.env, self.clients.s3
        key = layout.checkpoint_key(env.job, env.run_id)
        if not data.download_if_exists(s3, env.bucket, key, ckpt_path):
            log.info("no checkpoint at s3://%s/%s: training from the start", env.bucket, key)
            return None
        info = checkpoint.inspect(ckpt_path)
        if info is None:
            log.warning("checkpoint s3://%s/%s is not resumable: training from the start", env.bucket, key)
            ckpt_path.unlink()
            return None
        log.info(
            "checkpoint s3://%s/%s: %d/%d epochs done%s",
            env.bucket,
            key,
            info.finished,
            info.epochs,
            " (training is over)"
            if info.done
            else f" and {info.batches_done}/{info.batches} batches of epoch {info.finished + 1}"
            if info.batches_done
            else "",
        )
        best = save_dir / "weights" / layout.BEST
        best_key = layout.checkpoint_key(env.job, env.run_id, layout.BEST)
        if data.download_if_exists(s3, env.bucket, best_key, best):
            log.info("best.pt of the run restored from s3://%s/%s", env.bucket, best_key)
        checkpoint.rewrite_paths(
            ckpt_path,
            data=data_yaml,
            save_dir=save_dir,
            # the resumed run picks this machine's device, not the one the checkpoint was made on
            updates={"device": None, "workers": args.get("workers", 8)},
            best=best,
        )
        csv_text: str | None = None
        csv_key = layout.artifact_key(env.job, env.run_id, layout.RESULTS_CSV)
        csv_local = self.root / "results.previous.csv"
        if data.download_if_exists(s3, env.bucket, csv_key, csv_local):
            csv_text = csv_local.read_text()
        checkpoint.restore_results(
            save_dir / layout.RESULTS_CSV, csv_text, info.finished, checkpoint=ckpt_path
        )
        return info

    def _validate_finished(
        self, ckpt_path: Path, data_yaml: Path, save_dir: Path, info: checkpoint.ResumeInfo
    ) -> TrainResult:
        """Training of this run is over (an earlier attempt was lost in its final validation or
        upload): finish as Ultralytics does after the last epoch, without training again. Strip
        the optimizer from last.pt and best.pt, validate best.pt, report."""
        from ultralytics import YOLO
        from ultralytics.utils.torch_utils import strip_optimizer

        self.finishing.set()
        assert self.channel is not None
        channel = self.channel
        weights = save_dir / "weights"
        last, best = weights / layout.LAST, weights / layout.BEST
        weights.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ckpt_path, last)
        if not best.is_file():  # a checkpoint from before best.pt was kept with it
            log.warning("no best.pt kept with the checkpoint: publishing the last epoch's weights as best.pt")
            shutil.copyfile(ckpt_path, best)
        train_args = checkpoint.train_args(ckpt_path)
        ckpt = strip_optimizer(last)
        strip_optimizer(best, updates={"train_results": ckpt.get("train_results")})
        log.info(
            "training is over (%d/%d epochs): validating best.pt and reporting, without training",
            info.finished,
            info.epochs,
        )
        model = YOLO(str(best))
        model.add_callback("on_val_batch_end", lambda _validator: channel.heartbeat())
        self._add_extra_callbacks(model)
        val_args = {k: train_args[k] for k in VAL_ARGS if train_args.get(k) is not None}
        batch = train_args.get("batch")
        if isinstance(batch, int) and batch > 0:
            val_args["batch"] = batch
        started = time.monotonic()
        metrics = model.val(
            data=str(data_yaml),
            split="val",
            project=str(save_dir.parent),
            name=save_dir.name,
            exist_ok=True,
            **val_args,
        )
        values = dict(getattr(metrics, "results_dict", None) or {})
        if train_args.get("plots", True):
            draw_results(save_dir / layout.RESULTS_CSV)
        return self._report(
            save_dir,
            best,
            last,
            values,
            best_epoch=info.best_epoch or info.finished,
            epochs=info.finished,
            seconds=time.monotonic() - started,
        )

    def _finish(self, model: Any, metrics: Any, seconds: float) -> TrainResult:
        trainer = model.trainer
        return self._report(
            Path(trainer.save_dir),
            Path(trainer.best),
            Path(trainer.last),
            dict(getattr(metrics, "results_dict", None) or {}),
            best_epoch=int(getattr(trainer.stopper, "best_epoch", 0) or trainer.epoch + 1),
            epochs=int(trainer.epoch) + 1,
            seconds=seconds,
        )

    def _report(
        self,
        save_dir: Path,
        best: Path,
        last: Path,
        values: dict[str, Any],
        *,
        best_epoch: int,
        epochs: int,
        seconds: float,
    ) -> TrainResult:
        """Write metrics.json, upload the artifacts (metrics.json last: it says they are all
        there) and make the result to send."""
        env, s3 = self.env, self.clients.s3
        short = short_metrics(values)
        summary = {
            "job": env.job,
            "run_id": env.run_id,
            "attempt": env.attempt,
            "metrics": short,
            "best_epoch": best_epoch,
            "epochs": epochs,
            "seconds": round(seconds, 3),
            "ultralytics": {k: float(v) for k, v in values.items()},
        }
        (save_dir / layout.METRICS_JSON).write_text(json.dumps(summary, indent=2) + "\n")
        files: dict[str, Path] = {
            layout.BEST: best,
            layout.LAST: last,
            layout.RESULTS_CSV: save_dir / layout.RESULTS_CSV,
            layout.METRICS_JSON: save_dir / layout.METRICS_JSON,
        }
        for plot in sorted(save_dir.glob("*.png")) + sorted(save_dir.glob("*.jpg")):
            files[plot.name] = plot
        files[layout.METRICS_JSON] = files.pop(layout.METRICS_JSON)  # last: the set is complete
        artifacts: dict[str, str] = {}
        for name, path in files.items():
            if path.is_file():
                key = layout.artifact_key(env.job, env.run_id, name)
                s3.upload_file(str(path), env.bucket, key)
                artifacts[name] = key
                assert self.channel is not None
                self.channel.heartbeat()
        artifacts[LOG_NAME] = layout.artifact_key(env.job, env.run_id, LOG_NAME)
        log.info(
            "uploaded %d artifacts to s3://%s/%s",
            len(artifacts),
            env.bucket,
            layout.artifacts_prefix(env.job, env.run_id),
        )
        return TrainResult(
            metrics=short,
            best_epoch=best_epoch,
            epochs=epochs,
            seconds=round(seconds, 3),
            attempt=env.attempt,
            artifacts=artifacts,
        )

    def _finish_uploads(self, timeout: float = 300) -> None:
        if self.monitor is None:
            return
        try:
            self.monitor.upload_last_good(timeout)
        except Exception as err:
            log.warning("the last checkpoint upload failed: %s", err)

    def _upload_log(self) -> None:
        try:
            for handler in logging.getLogger("spotyolo.trainer").handlers:
                handler.flush()
            self.clients.s3.upload_file(
                str(self.log_file),
                self.env.bucket,
                layout.artifact_key(self.env.job, self.env.run_id, LOG_NAME),
            )
        except Exception as err:  # the log is a convenience; never mask the outcome
            log.warning("could not upload the run log: %s", err)


def draw_results(results_csv: Path) -> Path | None:
    """Draw results.png from the run's results.csv, as Ultralytics does after its last epoch: a
    run finished by a later attempt (``_validate_finished``) trains no epoch, so nothing else
    would draw it. A plot that fails costs a warning, never the run."""
    if not results_csv.is_file():
        return None
    try:
        from ultralytics.utils.plotting import plot_results

        plot_results(file=str(results_csv))
    except Exception as err:
        log.warning("results.png could not be drawn from %s: %s", results_csv.name, err)
        return None
    drawn = results_csv.with_name("results.png")
    return drawn if drawn.is_file() else None


def prewarm() -> threading.Thread | None:
    """Import torch, and what Ultralytics' ``deterministic`` mode (its default) imports in
    ``init_seeds`` (``torch.use_deterministic_algorithms`` loads ``torch._inductor`` and
    ``torch._dynamo``: 1-3 s), in a background thread while the spec, the dataset and the
    checkpoint download. Ultralytics itself waits for ``prepare_ultralytics``. A no-op in a
    process that has them (the local engine's warm trainer, the tests)."""
    if "torch._inductor" in sys.modules:
        return None

    def work() -> None:
        try:
            import torch._inductor  # noqa: F401
        except Exception as err:  # the training thread imports it again and reports
            log.debug("prewarm import failed: %s", err)

    thread = threading.Thread(target=work, name="prewarm", daemon=True)
    thread.start()
    return thread


def _cuda_visible() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m spotyolo.trainer",
        description="Train one attempt of a spotyolo job run (environment contract in trainer/main.py).",
        epilog="Exit codes: " + ", ".join(f"{code.value} {code.name}" for code in ExitCode),
    )
    parser.parse_args(argv)
    try:
        env = TrainerEnv.from_env()
    except EnvironmentInvalid as err:
        print(f"trainer: {err}", file=sys.stderr)
        return ExitCode.BAD_ENVIRONMENT
    try:
        clients = Clients.create(env.region)
        code = int(TrainerRun(env, clients).run())
    except Exception as err:
        print(f"trainer crashed: {_traceback_tail(err)}", file=sys.stderr)
        return ExitCode.CRASHED
    log.info("exit %d (%s)", code, ExitCode(code).name)
    return code
