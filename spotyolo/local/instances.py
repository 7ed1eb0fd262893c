"""EC2 instances of the local engine: each running instance tagged ``app=spotyolo`` is a
``python -m spotyolo.trainer`` subprocess with its own fake instance-metadata service.

The runner plays the parts of EC2 that moto does not:
- an instance that starts running boots the trainer (the user data's job on AWS);
- terminating an instance (cleanup, cancel, a spot reclaim) kills its process;
- a process that exits while its instance runs shuts the instance down (shutdown behaviour
  = terminate), as the trainer's exit does on AWS;
- every instance that goes away publishes the EC2 state-change event, which the
  instance-state rule routes to ``instance_lost`` (which ignores what is not pending);
- ``--interrupt-at-epoch N``: once the trainer is inside epoch N, the instance's metadata
  service announces a spot interruption and the instance is terminated after the notice.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import ClientError

from spotyolo.contract.env import TrainerVar
from spotyolo.contract.events import EC2_SOURCE, EC2_STATE_CHANGE, LOST_STATES
from spotyolo.core.fleet import ATTEMPT_TAG, JOB_TAG, RUN_TAG
from spotyolo.core.models import JobItem
from spotyolo.local.chaos import NO_FAULTS, FaultHook, Point
from spotyolo.local.imds import FakeMetadataService

if TYPE_CHECKING:  # the stubs are a development dependency
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import InstanceTypeDef

log = logging.getLogger("spotyolo_local")

#: environment a trainer process inherits from the engine's (the rest is set explicitly)
_INHERITED = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "TZ",
    "PYTHONPATH",
    "VIRTUAL_ENV",
    "OMP_NUM_THREADS",
)
#: how long a boot waits for the warm trainer image before starting a cold trainer
ZYGOTE_READY_SECONDS = 60.0
#: how often trainer processes and pending interruptions are looked at
TICK_SECONDS = 0.25
#: the trainer gets this share of an epoch into epoch N before the notice comes
NOTICE_EPOCH_FRACTION = 0.4
#: what the trainer logs when its first epoch starts (trainer.monitor, on_pretrain_routine_end)
TRAINING_STARTED = "training epochs"
#: the trainer's metadata poll interval locally (5 s on EC2, where epochs take minutes)
IMDS_POLL_SECONDS = 1.0


DEFAULT_TRAINER_COMMAND = [sys.executable, "-m", "spotyolo.trainer"]


class TrainerProcess(Protocol):
    """What the runner needs of a trainer process: a subprocess.Popen or a ForkedTrainer."""

    pid: int

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


class ForkedTrainer:
    """A trainer forked by the zygote; its exit code arrives through the zygote's pipe."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._code: int | None = None
        self._done = threading.Event()

    def _exited(self, code: int) -> None:
        self._code = code
        self._done.set()

    @property
    def returncode(self) -> int | None:
        return self._code

    def poll(self) -> int | None:
        return self._code

    def wait(self, timeout: float | None = None) -> int:
        if not self._done.wait(timeout):
            raise subprocess.TimeoutExpired(f"trainer pid {self.pid}", timeout or 0)
        assert self._code is not None
        return self._code


class Zygote:
    """The engine's side of :mod:`spotyolo.local.zygote` (started at once, in the
    background: its imports overlap the upload and Validate job)."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.ready = threading.Event()
        self.failed = False
        self._children: dict[int, ForkedTrainer] = {}
        self._spawned: dict[str, int] = {}
        self._replies = threading.Condition()
        self._write = threading.Lock()
        self._log = open(workdir / "zygote.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "spotyolo.local.zygote"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
            cwd=workdir,
        )
        self._reader = threading.Thread(target=self._read, name="spotyolo-zygote", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            try:
                message = json.loads(raw)
            except ValueError:
                continue
            with self._replies:
                if message.get("ready"):
                    self.ready.set()
                elif "exit" in message:
                    child = self._children.get(message["pid"])
                    if child is not None:
                        child._exited(int(message["exit"]))
                elif "id" in message:
                    self._spawned[message["id"]] = int(message["pid"])
                self._replies.notify_all()
        self.failed = True  # the zygote exited: whatever it did not report is gone with it
        self.ready.set()
        with self._replies:
            for child in self._children.values():
                if child.returncode is None:
                    child._exited(-9)
            self._replies.notify_all()

    def usable(self, timeout: float = ZYGOTE_READY_SECONDS) -> bool:
        self.ready.wait(timeout)
        return self.ready.is_set() and not self.failed

    def spawn(self, instance_id: str, env: dict[str, str], cwd: Path, log_path: Path) -> ForkedTrainer:
        request = {"id": instance_id, "env": env, "cwd": str(cwd), "log": str(log_path)}
        with self._write:
            assert self.process.stdin is not None
            self.process.stdin.write((json.dumps(request) + "\n").encode())
            self.process.stdin.flush()
        with self._replies:
            if not self._replies.wait_for(lambda: instance_id in self._spawned or self.failed, timeout=30):
                raise RuntimeError(f"the zygote did not start a trainer for {instance_id}")
            if instance_id not in self._spawned:
                raise RuntimeError("the zygote exited")
            child = ForkedTrainer(self._spawned[instance_id])
            self._children[child.pid] = child
            return child

    def close(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self._log.close()


@dataclass
class LocalInstance:
    id: str
    tags: dict[str, str]
    instance_type: str
    az: str
    workdir: Path
    imds: FakeMetadataService
    process: TrainerProcess | None = None
    state: str = "running"
    started: float = field(default_factory=time.monotonic)
    exit_code: int | None = None
    #: monotonic time at which the interruption notice is to be announced / was announced
    announce_at: float | None = None
    announced_at: float | None = None
    #: monotonic time at which the engine terminates the instance (end of the notice window)
    terminate_at: float | None = None
    interrupt_epoch: int | None = None
    #: monotonic time at which the instance has booted and its trainer starts
    boot_at: float = 0.0

    @property
    def job(self) -> str:
        return self.tags.get("job", "")

    @property
    def attempt(self) -> int:
        try:
            return int(self.tags.get("attempt", "0"))
        except ValueError:
            return 0

    @property
    def log_path(self) -> Path:
        return self.workdir / "trainer.log"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class Interruption:
    instance: str
    job: str
    attempt: int
    epoch: int
    announced: float
    terminated: float | None = None


@dataclass
class InstanceWorld:
    """What the instance runner needs of the engine: the emulator, the deployment and the
    timings, handed over explicitly (the runner knows nothing else of the engine)."""

    endpoint: str
    workdir: Path
    bucket: str
    table: str
    #: a boto3 client of the emulator, by service name
    client: Callable[[str], Any]
    #: publish an event as the AWS service would: (source, detail type, detail, resources)
    put_event: Callable[[str, str, dict[str, Any], list[str]], None]
    #: the job table's item of a job
    job_item: Callable[[str], JobItem | None]
    #: set when the engine stops
    stopped: threading.Event
    poll_seconds: float
    boot_seconds: float
    notice_seconds: float
    trainer_command: list[str]
    trainer_env: dict[str, str]
    warm_trainer: bool
    interrupt_at_epochs: list[int]
    #: the fault hook (spotyolo.local.chaos): asked about each running instance every tick
    faults: FaultHook = NO_FAULTS
    #: when EC2 launched an instance (monotonic), or None: its boot counts from there
    launched_at: Callable[[str], float | None] = lambda _instance_id: None


class InstanceRunner:
    """Polls the emulator's instances and keeps one trainer process per running instance."""

    def __init__(self, world: InstanceWorld) -> None:
        self.world = world
        self.instances: dict[str, LocalInstance] = {}
        self.pending_interrupts = sorted(set(world.interrupt_at_epochs))
        self.interruptions: list[Interruption] = []
        #: instance ids whose state-change event was published
        self._announced_gone: set[str] = set()
        self._lock = threading.RLock()
        self._yolo_dir = world.workdir / "yolo"
        #: the warm trainer image (None: every instance starts ``python -m spotyolo.trainer`` cold)
        self.zygote: Zygote | None = None
        if world.warm_trainer and world.trainer_command == DEFAULT_TRAINER_COMMAND:
            self.zygote = Zygote(self.base_env(), world.workdir)

    # ------------------------------------------------------------------ the loop

    def loop(self) -> None:
        """Ask the emulator about instances every ``poll_seconds``; watch the processes (no API
        call) every :data:`TICK_SECONDS`. The engine shares 2 cores with training: few calls."""
        last = 0.0
        while not self.world.stopped.is_set():
            now = time.monotonic()
            describe = now - last >= self.world.poll_seconds
            if describe:
                last = now
            self.poll_once(describe=describe)
            self.world.stopped.wait(TICK_SECONDS)

    def poll_once(self, describe: bool = True) -> None:
        with self._lock:
            if describe:
                ec2: EC2Client = self.world.client("ec2")
                reservations = ec2.describe_instances(Filters=[{"Name": "tag:app", "Values": ["spotyolo"]}])[
                    "Reservations"
                ]
                for described in (i for r in reservations for i in r["Instances"]):
                    self._sync(described)
            now = time.monotonic()
            for inst in list(self.instances.values()):
                if inst.state != "running" or self._fault(inst):
                    continue
                if inst.process is None:
                    if now >= inst.boot_at:
                        self._start_trainer(inst)
                    continue
                if inst.process is not None and inst.process.poll() is not None and inst.exit_code is None:
                    inst.exit_code = inst.process.returncode
                    log.info("trainer of %s exited with %s: the instance shuts down", inst.id, inst.exit_code)
                    self.terminate(inst.id)
                    continue
                if inst.terminate_at is not None and now >= inst.terminate_at:
                    log.info("spot notice window of %s is over: terminating it", inst.id)
                    self.terminate(inst.id)
                    continue
                self._maybe_interrupt(inst, now)

    def _fault(self, inst: LocalInstance) -> bool:
        """Ask the fault hook about this instance: a spot notice, or a loss with no notice.
        True when the instance was terminated."""
        booted = inst.process is not None
        effect = self.world.faults.at(Point.INSTANCE, inst.id, log=inst.log_path, booted=booted)
        if effect is None:
            return False
        if effect.action == "notice":
            if inst.announced_at is None:
                self.interrupt(inst.id)
            return False
        log.info("instance %s is lost with no notice", inst.id)
        self.terminate(inst.id)
        return True

    def _sync(self, described: InstanceTypeDef) -> None:
        iid = described["InstanceId"]
        state = described["State"]["Name"]
        inst = self.instances.get(iid)
        if inst is None and state in ("pending", "running"):
            self._boot(described)
            return
        if state in LOST_STATES or state in ("stopping", "stopped"):
            if inst is not None and inst.state == "running":
                inst.state = state
                for record in self.interruptions:
                    if record.instance == iid and record.terminated is None:
                        record.terminated = time.monotonic()
                self._kill(inst)
                inst.imds.stop()
            if iid not in self._announced_gone and state in LOST_STATES:
                self._announced_gone.add(iid)
                self.world.put_event(
                    EC2_SOURCE,
                    EC2_STATE_CHANGE,
                    {"instance-id": iid, "state": state},
                    [f"arn:aws:ec2:us-east-1:123456789012:instance/{iid}"],
                )

    # ------------------------------------------------------------------ boot / kill

    def _boot(self, described: InstanceTypeDef) -> None:
        iid = described["InstanceId"]
        tags = {t["Key"]: t["Value"] for t in described.get("Tags", [])}
        workdir = self.world.workdir / "instances" / iid
        workdir.mkdir(parents=True, exist_ok=True)
        imds = FakeMetadataService(
            iid,
            tags=tags,
            availability_zone=described.get("Placement", {}).get("AvailabilityZone", "us-east-1a"),
            instance_type=described.get("InstanceType", "g5.xlarge"),
        ).start()
        inst = LocalInstance(
            id=iid,
            tags=tags,
            instance_type=described.get("InstanceType", ""),
            az=described.get("Placement", {}).get("AvailabilityZone", ""),
            workdir=workdir,
            imds=imds,
        )
        # EC2 boots an instance from its launch, not from when a describe first lists it
        now = time.monotonic()
        launched = self.world.launched_at(iid)
        inst.boot_at = min(now, launched if launched is not None else now) + self.world.boot_seconds
        self.instances[iid] = inst

    def _start_trainer(self, inst: LocalInstance) -> None:
        """The instance has booted: its user data starts the trainer."""
        iid, workdir = inst.id, inst.workdir
        env = self.trainer_env(inst)
        log.info("instance %s (%s, attempt %s) boots a trainer", iid, inst.job, inst.attempt)
        if self.zygote is not None and self.zygote.usable():
            try:
                inst.process = self.zygote.spawn(iid, env, workdir, inst.log_path)
                return
            except Exception:  # a broken zygote must not cost the run: boot the slow way
                log.exception("warm trainer start failed; starting python -m spotyolo.trainer")
        with open(inst.log_path, "ab") as out:
            inst.process = subprocess.Popen(
                list(self.world.trainer_command),
                cwd=workdir,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: killed as a whole
            )

    def base_env(self) -> dict[str, str]:
        """What every instance's trainer environment has in common (also the zygote's)."""
        env = {k: os.environ[k] for k in _INHERITED if k in os.environ}
        env.update(
            {
                TrainerVar.BUCKET: self.world.bucket,
                TrainerVar.JOB_TABLE: self.world.table,
                "AWS_REGION": "us-east-1",
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_ENDPOINT_URL": self.world.endpoint,
                "AWS_ACCESS_KEY_ID": "local",
                "AWS_SECRET_ACCESS_KEY": "local",
                "AWS_SESSION_TOKEN": "local",
                "YOLO_CONFIG_DIR": str(self._yolo_dir),
                "YOLO_OFFLINE": "1",
                "PYTHONUNBUFFERED": "1",
                # AWS's 2-minute notice is ``notice_seconds`` here: poll and answer in step
                TrainerVar.IMDS_POLL_SECONDS: str(IMDS_POLL_SECONDS),
                TrainerVar.INTERRUPT_GRACE_SECONDS: str(max(1.0, self.world.notice_seconds / 2)),
                # a local epoch takes a second, not the minutes of checkpoint_minutes: checkpoint
                # every epoch, so a lost instance resumes here as it would on AWS
                TrainerVar.CHECKPOINT_SECONDS: "0",
            }
        )
        env.update(self.world.trainer_env)
        return env

    def trainer_env(self, inst: LocalInstance) -> dict[str, str]:
        """The trainer's environment (:class:`~spotyolo.contract.env.TrainerVar`), pointed at the
        emulator and the instance's IMDS."""
        env = self.base_env()
        env.update(
            {
                TrainerVar.JOB: inst.tags.get(JOB_TAG, ""),
                TrainerVar.RUN_ID: inst.tags.get(RUN_TAG, ""),
                TrainerVar.ATTEMPT: inst.tags.get(ATTEMPT_TAG, ""),
                TrainerVar.IMDS_ENDPOINT: inst.imds.url,
                TrainerVar.WORKDIR: str(inst.workdir),
            }
        )
        env.update(self.world.trainer_env)
        return env

    def _kill(self, inst: LocalInstance, grace: float = 3.0) -> None:
        """Stop the instance's process group: SIGTERM, then SIGKILL after ``grace`` seconds."""
        process = inst.process
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        except ProcessLookupError:
            pass
        inst.exit_code = process.returncode

    def terminate(self, instance_id: str) -> None:
        """Terminate an instance in the emulator; the next poll kills it and publishes the event."""
        self.world.client("ec2").terminate_instances(InstanceIds=[instance_id])
        self._sync_now(instance_id)

    def _sync_now(self, instance_id: str) -> None:
        ec2: EC2Client = self.world.client("ec2")
        try:
            reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        except ClientError:  # just launched, not visible yet (eventual consistency): the poll syncs it
            return
        for reservation in reservations:
            for described in reservation["Instances"]:
                self._sync(described)

    def kill_trainer(self, instance_id: str, sig: int = signal.SIGKILL) -> None:
        """Kill an instance's trainer without terminating the instance (a crash; tests)."""
        inst = self.instances[instance_id]
        if inst.process is not None and inst.process.poll() is None:
            os.killpg(inst.process.pid, sig)

    def shutdown(self) -> None:
        """Terminate every instance still running and stop every trainer and IMDS."""
        with self._lock:
            running = [i.id for i in self.instances.values() if i.state == "running"]
            if running:
                try:
                    self.world.client("ec2").terminate_instances(InstanceIds=running)
                except Exception:
                    log.debug("terminate at shutdown failed", exc_info=True)
            for inst in self.instances.values():
                self._kill(inst, grace=2.0)
                inst.imds.stop()
                if inst.state == "running":
                    inst.state = "terminated"
            if self.zygote is not None:
                self.zygote.close()

    # ------------------------------------------------------------------ spot interruptions

    def _maybe_interrupt(self, inst: LocalInstance, now: float) -> None:
        if not inst.alive():
            return
        if inst.announce_at is not None:
            if inst.announced_at is None and now >= inst.announce_at:
                self.interrupt(inst.id, epoch=inst.interrupt_epoch)
            return
        if not self.pending_interrupts:
            return
        epoch = self.pending_interrupts[0]
        progress = self._progress(inst)
        if progress is None:
            return
        done, seconds_per_epoch = progress
        if done < epoch - 1:
            return
        self.pending_interrupts.pop(0)
        inst.interrupt_epoch = epoch
        # "inside epoch N": a share of an epoch after N-1 were completed (at once if already past)
        delay = NOTICE_EPOCH_FRACTION * (seconds_per_epoch or 1.0) if done == epoch - 1 else 0.0
        inst.announce_at = now + delay

    def _progress(self, inst: LocalInstance) -> tuple[int, float | None] | None:
        """(epochs completed, seconds per epoch) this instance's trainer reported, or None
        while it has not started training."""
        item = self.world.job_item(inst.job)
        if item is None or item.run_id != inst.tags.get("run"):
            return None
        progress = item.progress
        if progress is None or progress.attempt != inst.attempt:
            # no epoch finished yet on this instance: the first one (or the resumed one, after
            # the epochs the run already reported) has begun once the trainer's console says so
            done = progress.epoch if progress is not None else 0
            return (done, None) if self._training_started(inst) else None
        return progress.epoch, progress.seconds_per_epoch

    @staticmethod
    def _training_started(inst: LocalInstance) -> bool:
        try:
            with open(inst.log_path, encoding="utf-8", errors="replace") as log_file:
                return TRAINING_STARTED in log_file.read()
        except OSError:
            return False

    def schedule_interrupts(self, epochs: list[int]) -> None:
        """Interrupt the trainer inside each of these epochs (once each), like --interrupt-at-epoch."""
        with self._lock:
            self.pending_interrupts = sorted(set(self.pending_interrupts) | set(epochs))

    def interrupt(
        self, instance_id: str, epoch: int | None = None, notice_seconds: float | None = None
    ) -> None:
        """Announce a spot interruption on the instance's IMDS; terminate it after the notice."""
        with self._lock:
            inst = self.instances[instance_id]
            notice = self.world.notice_seconds if notice_seconds is None else notice_seconds
            inst.imds.announce_interruption(in_seconds=max(1, round(notice)))
            inst.announced_at = time.monotonic()
            inst.terminate_at = inst.announced_at + notice
            self.interruptions.append(
                Interruption(inst.id, inst.job, inst.attempt, epoch or 0, inst.announced_at)
            )
            log.info(
                "spot interruption announced to %s (epoch %s); terminated in %.0f s", inst.id, epoch, notice
            )

    # ------------------------------------------------------------------ views

    def live_processes(self) -> list[str]:
        return [i.id for i in self.instances.values() if i.alive()]
