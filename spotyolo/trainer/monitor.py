"""Ultralytics callbacks: checkpoints to S3, progress, heartbeats, divergence, interruptions.

Everything that must happen *during* training hangs off Ultralytics' callbacks, on the
training thread:

- ``on_train_batch_end``: the heartbeat (so a hung batch starves it and the state machine's
  stall watchdog fires), the non-finite-loss check (before Ultralytics' own NaN recovery
  can burn three more epochs), and the reaction to a spot interruption notice;
- ``on_fit_epoch_end``: write progress to the job table, and queue the epoch's checkpoint for
  upload when it is due: once ``checkpoint_seconds`` have passed since the last one (the
  insurance against an instance lost without a notice), after the last epoch, and at once on
  an interruption notice. The upload itself runs in the background (:class:`CheckpointUploader`).
"""

from __future__ import annotations

import logging
import math
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from boto3.s3.transfer import TransferConfig

from spotyolo.contract import layout
from spotyolo.contract.errors import TrainingDiverged
from spotyolo.core.jobtable import JobTable, now_iso
from spotyolo.core.models import Progress
from spotyolo.trainer.task import TaskChannel
from spotyolo.trainer.watcher import Notice

if TYPE_CHECKING:  # the stubs are a development dependency: not in the trainer image
    from mypy_boto3_s3 import S3Client

    from spotyolo.trainer.ultralytics_midepoch import MidEpoch

log = logging.getLogger(__name__)

#: one PutObject up to S3's single-PUT limit: the object is replaced atomically, and a
#: multipart upload's extra round trips buy nothing for a checkpoint
SINGLE_PUT = TransferConfig(multipart_threshold=5 * 1024**3 - 1, max_concurrency=1)

#: Ultralytics metric keys -> the names of TrainResult / Progress / the notification
METRIC_KEYS = {
    "metrics/precision(B)": "precision",
    "metrics/recall(B)": "recall",
    "metrics/mAP50(B)": "mAP50",
    "metrics/mAP50-95(B)": "mAP50-95",
    "fitness": "fitness",
}


def short_metrics(values: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, name in METRIC_KEYS.items():
        value = values.get(key)
        if value is not None:
            out[name] = round(float(value), 6)
    return out


def _stamp(path: Path) -> tuple[int, int] | None:
    """(mtime in ns, size) of ``path``: tells a rewritten best.pt apart without reading it."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


@dataclass
class _Request:
    last: Path
    csv: Path
    best: Path | None
    #: set once the files are copied aside: Ultralytics may rewrite (or strip) them from then on
    staged: threading.Event


class CheckpointUploader:
    """Uploads the run's checkpoint (last.pt, results.csv, and best.pt when it changed) from a
    background thread, off the training thread's critical path.

    ``submit`` only records the newest request and returns: one worker thread copies the files
    aside (Ultralytics rewrites last.pt in place at its next save; a copy that saw a rewrite is
    taken again) and uploads them. A request not yet started is replaced by a newer one, so S3
    receives checkpoints in order and never an older one last. A state already uploaded (same
    mtime and size of last.pt) is not uploaded again. A PUT is atomic: an upload cut short leaves
    the previous checkpoint in S3. best.pt goes first: a checkpoint in S3 never names a best
    fitness whose weights are not there (``checkpoint.rewrite_paths`` handles the other way).
    An upload error is raised by the next ``submit``/``wait``.
    """

    def __init__(
        self, s3: S3Client, bucket: str, checkpoint_key: str, results_key: str, best_key: str | None = None
    ) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.checkpoint_key = checkpoint_key
        self.results_key = results_key
        self.best_key = best_key
        self.uploads = 0
        self.best_uploads = 0
        #: seconds the uploads took, all together (in the background)
        self.upload_seconds = 0.0
        self._best_stamp: tuple[int, int] | None = None
        self._last_stamp: tuple[int, int] | None = None
        self._cond = threading.Condition()
        self._pending: _Request | None = None
        self._busy = False
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def known_best(self, best: Path) -> None:
        """``best`` is already in S3 as it is (put back from the checkpoint): do not upload it again."""
        self._best_stamp = _stamp(best)

    def uploaded(self, last: Path) -> bool:
        """``last`` as it is now was already uploaded (or is being uploaded)."""
        stamp = _stamp(last)
        return stamp is not None and stamp == self._last_stamp

    def submit(self, last: Path, csv: Path, best: Path | None = None, *, staged: bool = False) -> bool:
        """Queue an upload of the checkpoint as it is now; False when there is nothing new to upload.

        With ``staged``, return only once the files are copied aside (before Ultralytics may
        strip last.pt after the final epoch): a copy of one checkpoint, once per run.
        """
        self._raise_error()
        if not last.is_file() or self.uploaded(last):
            return False
        request = _Request(last, csv, best, threading.Event())
        with self._cond:
            self._pending = request  # a request not started yet is replaced: the newest wins
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="checkpoint-upload", daemon=True)
                self._thread.start()
            self._cond.notify_all()
        if staged:
            request.staged.wait()
        return True

    def _work(self) -> None:
        while True:
            with self._cond:
                while self._pending is None:
                    # idle for 30 s: the thread ends (submit starts another)
                    if not self._cond.wait(timeout=30.0) and self._pending is None:
                        self._thread = None
                        return
                request, self._pending = self._pending, None
                self._busy = True
            try:
                self._upload(request)
            except BaseException as err:
                self._error = err
            finally:
                request.staged.set()
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _upload(self, request: _Request) -> None:
        stage = request.last.parent / ".upload"
        stage.mkdir(exist_ok=True)
        staged_last, last_stamp = _copy_steady(request.last, stage / layout.LAST)
        if staged_last is None or last_stamp == self._last_stamp:
            return
        staged_best: Path | None = None
        best_stamp = _stamp(request.best) if request.best is not None and self.best_key else None
        if request.best is not None and best_stamp is not None and best_stamp != self._best_stamp:
            staged_best, best_stamp = _copy_steady(request.best, stage / layout.BEST)
        staged_csv, _ = _copy_steady(request.csv, stage / layout.RESULTS_CSV)
        request.staged.set()
        start = time.monotonic()
        if staged_best is not None and self.best_key is not None:
            self.s3.upload_file(str(staged_best), self.bucket, self.best_key, Config=SINGLE_PUT)
            self._best_stamp = best_stamp
            self.best_uploads += 1
        self.s3.upload_file(str(staged_last), self.bucket, self.checkpoint_key, Config=SINGLE_PUT)
        self._last_stamp = last_stamp
        if staged_csv is not None:  # after the checkpoint: results may run one epoch ahead, never behind
            self.s3.upload_file(str(staged_csv), self.bucket, self.results_key)
        self.uploads += 1
        seconds = time.monotonic() - start
        self.upload_seconds += seconds
        log.info(
            "checkpoint uploaded in the background (%.1f MiB%s in %.2f s)",
            staged_last.stat().st_size / 2**20,
            " and best.pt" if staged_best is not None else "",
            seconds,
        )

    def settle(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` s (None: as long as it takes) for the uploads queued, from any
        thread; True when none is left (an error, if any, stays for ``wait``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._pending is not None or self._busy:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def wait(self, timeout: float | None = None) -> None:
        """Block until the uploads queued are done; raise an upload's error."""
        if not self.settle(timeout):
            raise TimeoutError(f"checkpoint upload still running after {timeout} s")
        self._raise_error()

    def _raise_error(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise err


def _copy_steady(source: Path, target: Path, tries: int = 5) -> tuple[Path | None, tuple[int, int] | None]:
    """Copy ``source`` unless it is missing; a copy during which it was rewritten is taken again."""
    for _ in range(tries):
        before = _stamp(source)
        if before is None:
            return None, None
        shutil.copyfile(source, target)
        if _stamp(source) == before:
            return target, before
    raise RuntimeError(f"{source} kept changing while it was copied for upload")


@dataclass(frozen=True)
class RunRef:
    job: str
    run_id: str
    attempt: int
    bucket: str


class TrainingMonitor:
    """The callbacks of one training attempt; :meth:`attach` adds them to a YOLO model."""

    def __init__(
        self,
        ref: RunRef,
        *,
        s3: S3Client,
        table: JobTable,
        channel: TaskChannel,
        notice: Callable[[], Notice | None] = lambda: None,
        finishing: threading.Event | None = None,
        checkpoint_seconds: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
        midepoch: MidEpoch | None = None,
    ) -> None:
        self.ref = ref
        #: the position inside the epoch, for a checkpoint that continues at the next batch
        self.midepoch = midepoch
        self.checkpoint_seconds = checkpoint_seconds
        self.clock = clock
        #: when the last checkpoint upload was queued (or training started)
        self.uploaded_at = clock()
        #: (mtime, size) of the newest last.pt whose epoch ended with a finite loss
        self.good_last: tuple[int, int] | None = None
        self.s3 = s3
        self.table = table
        self.channel = channel
        self._notice = notice
        self.trainer: Any = None
        self.epoch_started = -1
        self.epoch_done = -1
        self.batch = 0
        #: whether this attempt's first batch was logged (the start-up bench reads that line)
        self.first_batch_logged = False
        #: set once the training thread has started handling an interruption notice
        self.interrupt_started = threading.Event()
        #: set once the last epoch has ended: only the final validation and the upload are left
        self.finishing = finishing if finishing is not None else threading.Event()
        self.uploader = CheckpointUploader(
            s3,
            ref.bucket,
            layout.checkpoint_key(ref.job, ref.run_id),
            layout.artifact_key(ref.job, ref.run_id, layout.RESULTS_CSV),
            best_key=layout.checkpoint_key(ref.job, ref.run_id, layout.BEST),
        )

    def attach(self, model: Any) -> None:
        model.add_callback("on_pretrain_routine_end", self.on_pretrain_routine_end)
        model.add_callback("on_train_epoch_start", self.on_train_epoch_start)
        model.add_callback("on_train_batch_end", self.on_train_batch_end)
        model.add_callback("on_val_batch_end", self.on_val_batch_end)
        model.add_callback("on_fit_epoch_end", self.on_fit_epoch_end)

    # ------------------------------------------------------------ callbacks

    def on_pretrain_routine_end(self, trainer: Any) -> None:
        self.trainer = trainer
        self.uploaded_at = self.clock()
        if trainer.start_epoch:
            log.info(
                "resuming at epoch %d/%d (epochs 1-%d are in the checkpoint)",
                trainer.start_epoch + 1,
                trainer.epochs,
                trainer.start_epoch,
            )
        log.info("training epochs %d-%d on %s", trainer.start_epoch + 1, trainer.epochs, trainer.device)
        self.channel.heartbeat()

    def on_train_epoch_start(self, trainer: Any) -> None:
        self.trainer = trainer
        self.epoch_started = trainer.epoch
        self.batch = 0

    def on_train_batch_end(self, trainer: Any) -> None:
        tracked = self.midepoch.i if self.midepoch is not None else -1
        self.batch = tracked + 1 if tracked >= 0 else self.batch + 1
        if not self.first_batch_logged:
            self.first_batch_logged = True
            log.info("first batch trained: epoch %d, batch %d", trainer.epoch + 1, self.batch)
        loss = trainer.loss
        if loss is not None and not bool(_finite(loss)):
            nb = len(trainer.train_loader) if trainer.train_loader is not None else "?"
            raise TrainingDiverged(
                f"non-finite loss ({_value(loss)}) in epoch {trainer.epoch + 1}/{trainer.epochs}, batch "
                f"{self.batch}/{nb}: training stopped before more epochs were spent. Fix: lower lr0 in "
                "config.yaml (e.g. halve it), check the labels for NaN or zero-size boxes, or set amp: false."
            )
        self.channel.heartbeat()
        notice = self._notice()
        if notice is not None:
            self.interrupt_mid_epoch(trainer, notice)

    def on_val_batch_end(self, validator: Any) -> None:
        self.channel.heartbeat()  # validation batches are progress too

    def on_fit_epoch_end(self, trainer: Any) -> None:
        # Ultralytics calls this once more after training (final validation of best.pt) with
        # epoch = last + 1: only real epoch ends count
        if trainer.epoch != self.epoch_started or trainer.epoch == self.epoch_done:
            return
        self.epoch_done = trainer.epoch
        tloss = trainer.tloss
        if tloss is not None and not all(_finite(v) for v in _loss_values(tloss)):
            raise TrainingDiverged(
                f"non-finite mean loss in epoch {trainer.epoch + 1}/{trainer.epochs}. Fix: lower lr0, check "
                "the labels, or set amp: false."
            )
        self.good_last = _stamp(Path(trainer.last))
        final = trainer.epoch + 1 >= trainer.epochs or bool(trainer.stop)
        if final or self._notice() is not None or self.clock() - self.uploaded_at >= self.checkpoint_seconds:
            # the final epoch's files are copied before Ultralytics strips last.pt
            self.upload_checkpoint(trainer, staged=final)
        losses = _losses(trainer)
        metrics = short_metrics({**(trainer.metrics or {}), "fitness": trainer.fitness})
        seconds = float(trainer.epoch_time) if trainer.epoch_time else None
        log.info(
            "epoch %d/%d  %s  %s%s",
            trainer.epoch + 1,
            trainer.epochs,
            " ".join(f"{k}={v:.4g}" for k, v in losses.items()),
            " ".join(f"{k}={v:.3f}" for k, v in metrics.items()),
            f"  ({seconds:.1f} s/epoch)" if seconds else "",
        )
        progress = Progress(
            epoch=trainer.epoch + 1,
            epochs=trainer.epochs,
            losses=losses,
            metrics=metrics,
            seconds_per_epoch=round(seconds, 3) if seconds else None,
            attempt=self.ref.attempt,
            updated=now_iso(),
        )
        if not self.table.update_progress(self.ref.job, self.ref.run_id, self.ref.attempt, progress):
            log.warning(
                "progress not recorded: attempt %d is no longer the job's current attempt", self.ref.attempt
            )
        self.channel.heartbeat()
        if trainer.epoch + 1 >= trainer.epochs or trainer.stop:
            self.finishing.set()  # only the final validation and the upload are left
        notice = self._notice()
        if notice is not None:
            if self.finishing.is_set():  # finishing beats a retry; the watcher keeps the time
                log.warning("interruption notice after the last epoch: finishing instead of stopping")
                return
            self.interrupt_started.set()
            self.upload_checkpoint(trainer, wait=True)  # a no-op when this epoch's is already queued
            self.channel.interrupted(
                f"spot interruption notice ({notice.action} at {notice.time}) at the end of epoch "
                f"{trainer.epoch + 1}/{trainer.epochs}; the checkpoint of that epoch is in "
                f"s3://{self.ref.bucket}/{layout.checkpoint_key(self.ref.job, self.ref.run_id)}: the next "
                f"attempt starts at epoch {trainer.epoch + 2}."
            )

    # ------------------------------------------------------------ actions

    def upload_checkpoint(self, trainer: Any, *, wait: bool = False, staged: bool = False) -> None:
        """Upload last.pt, results.csv and a changed best.pt of the epoch just saved (in the
        background unless ``wait``); nothing when that state is already uploaded."""
        self.uploader.submit(Path(trainer.last), Path(trainer.csv), Path(trainer.best), staged=staged)
        self.uploaded_at = self.clock()
        if wait:
            self.uploader.wait()

    def upload_last_good(self, timeout: float) -> None:
        """On a failure: the newest checkpoint of an epoch that ended well goes up if it has not
        (not one saved after a non-finite loss); then wait for the uploads."""
        trainer = self.trainer
        good = self.good_last
        if trainer is not None and good is not None and _stamp(Path(trainer.last)) == good:
            self.uploader.submit(Path(trainer.last), Path(trainer.csv), Path(trainer.best))
        self.uploader.wait(timeout)

    def interrupt_mid_epoch(self, trainer: Any, notice: Notice) -> None:
        """Save a checkpoint of the position inside the epoch (the next attempt continues at the
        next batch; else one that redoes the epoch), upload it, send SpotInterrupted, stop."""
        self.interrupt_started.set()
        self.uploader.wait()  # the previous epoch's upload first: the newer PUT must land last
        epoch, epochs = trainer.epoch, trainer.epochs
        nb = self.midepoch.nb if self.midepoch is not None and self.midepoch.nb else "?"
        where = f"epoch {epoch + 1}/{epochs}, batch {self.batch}/{nb}"
        why_not = self.midepoch.can_save(trainer) if self.midepoch is not None else "no mid-epoch tracking"
        if not why_not:
            started = time.monotonic()
            assert self.midepoch is not None
            self.midepoch.save(trainer)
            saved = time.monotonic() - started
            self.upload_checkpoint(trainer, wait=True)
            log.info(
                "mid-epoch checkpoint saved in %.2f s and uploaded in %.2f s",
                saved,
                time.monotonic() - started - saved,
            )
            if self.batch == nb:
                kept = "checkpoint saved after the epoch's last batch: the next attempt validates the epoch"
            else:
                kept = f"checkpoint saved: the next attempt continues at batch {self.batch + 1}/{nb}"
        elif epoch >= 1:
            log.warning("no mid-epoch checkpoint (%s): saving one that redoes the epoch", why_not)
            # save_model() records trainer.epoch as finished: step back one so a resume redoes
            # this epoch, and keep best.pt untouched (save_model rewrites it on tied fitness)
            best = trainer.best
            scratch = Path(trainer.wdir) / "interrupted-best.pt"
            trainer.epoch -= 1
            trainer.best = scratch
            try:
                trainer.save_model()
            finally:
                trainer.epoch += 1
                trainer.best = best
                scratch.unlink(missing_ok=True)
            self.upload_checkpoint(trainer, wait=True)
            kept = f"checkpoint saved: the next attempt redoes epoch {epoch + 1}"
        else:
            kept = f"no checkpoint ({why_not}, and no epoch finished yet): the next attempt starts over"
        log.warning("spot interruption during %s: %s", where, kept)
        self.channel.interrupted(
            f"spot interruption notice ({notice.action} at {notice.time}) during {where}; {kept}."
        )


def _finite(value: Any) -> bool:
    try:
        import torch

        if isinstance(value, torch.Tensor):
            return bool(torch.isfinite(value).all())
    except ImportError:  # pragma: no cover
        pass
    return math.isfinite(float(value))


def _value(value: Any) -> str:
    try:
        return f"{float(value.detach().sum()):g}"
    except Exception:
        return str(value)


def _loss_values(tloss: Any) -> list[Any]:
    if isinstance(tloss, dict):
        return list(tloss.values())
    try:
        return list(tloss)
    except TypeError:
        return [tloss]


def _losses(trainer: Any) -> dict[str, float]:
    try:
        items = trainer.label_loss_items(trainer.tloss, prefix="train")
    except Exception:
        return {}
    return {k.split("/", 1)[-1]: round(float(v), 6) for k, v in (items or {}).items()}
