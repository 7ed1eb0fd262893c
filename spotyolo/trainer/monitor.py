"""Ultralytics callbacks: checkpoints to S3, progress, heartbeats, divergence, interruptions.

Everything that must happen *during* training hangs off Ultralytics' callbacks, on the
training thread:

- ``on_train_batch_end``: the heartbeat (so a hung batch starves it and the state machine's
  stall watchdog fires), the non-finite-loss check (before Ultralytics' own NaN recovery
  can burn three more epochs), and the reaction to a spot interruption notice;
- ``on_fit_epoch_end``: upload ``last.pt`` and ``results.csv``, write progress to the job table.
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


class CheckpointUploader:
    """Uploads each epoch's best.pt (when it changed), last.pt and results.csv while the next
    epoch trains.

    One upload in flight at most: a new one first waits for the previous one, so S3 always
    receives them in order. The files are staged (copied) first, because Ultralytics
    rewrites last.pt in place at the next save. A PUT is atomic: an upload cut short leaves
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
        self._best_stamp: tuple[int, int] | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._stage: Path | None = None

    def known_best(self, best: Path) -> None:
        """``best`` is already in S3 as it is (put back from the checkpoint): do not upload it again."""
        self._best_stamp = _stamp(best)

    def _stage_best(self, best: Path | None, stage: Path) -> tuple[Path, tuple[int, int]] | None:
        if best is None or self.best_key is None:
            return None
        stamp = _stamp(best)
        if stamp is None or stamp == self._best_stamp:
            return None
        staged = stage / layout.BEST
        shutil.copyfile(best, staged)
        return staged, stamp

    def submit(self, last: Path, csv: Path, best: Path | None = None) -> None:
        self.wait()
        if not last.is_file():
            return
        stage = last.parent / ".upload"
        stage.mkdir(exist_ok=True)
        staged_best = self._stage_best(best, stage)
        staged_last, staged_csv = stage / layout.LAST, stage / layout.RESULTS_CSV
        shutil.copyfile(last, staged_last)
        has_csv = csv.is_file()
        if has_csv:
            shutil.copyfile(csv, staged_csv)

        def run() -> None:
            try:
                start = time.monotonic()
                if staged_best is not None and self.best_key is not None:
                    self.s3.upload_file(str(staged_best[0]), self.bucket, self.best_key, Config=SINGLE_PUT)
                    self._best_stamp = staged_best[1]
                    self.best_uploads += 1
                self.s3.upload_file(str(staged_last), self.bucket, self.checkpoint_key, Config=SINGLE_PUT)
                if has_csv:  # after the checkpoint: results may run one epoch ahead, never behind
                    self.s3.upload_file(str(staged_csv), self.bucket, self.results_key)
                self.uploads += 1
                log.info(
                    "checkpoint uploaded (%.1f MiB%s in %.2f s)",
                    staged_last.stat().st_size / 2**20,
                    " and best.pt" if staged_best is not None else "",
                    time.monotonic() - start,
                )
            except BaseException as err:
                self._error = err

        self._thread = threading.Thread(target=run, name="checkpoint-upload", daemon=True)
        self._thread.start()

    def settle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the upload in flight, from any thread; True when none is
        left (its error, if any, stays for ``wait``)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def wait(self, timeout: float | None = None) -> None:
        """Block until the upload in flight (if any) is done; raise its error."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"checkpoint upload still running after {timeout} s")
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            raise err


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
    ) -> None:
        self.ref = ref
        self.s3 = s3
        self.table = table
        self.channel = channel
        self._notice = notice
        self.trainer: Any = None
        self.epoch_started = -1
        self.epoch_done = -1
        self.batch = 0
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
        self.batch += 1
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
        self.upload_checkpoint(trainer)
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
            self.uploader.wait()
            self.channel.interrupted(
                f"spot interruption notice ({notice.action} at {notice.time}) at the end of epoch "
                f"{trainer.epoch + 1}/{trainer.epochs}; the checkpoint of that epoch is in "
                f"s3://{self.ref.bucket}/{layout.checkpoint_key(self.ref.job, self.ref.run_id)}: the next "
                f"attempt starts at epoch {trainer.epoch + 2}."
            )

    # ------------------------------------------------------------ actions

    def upload_checkpoint(self, trainer: Any, *, wait: bool = False) -> None:
        """Upload last.pt, results.csv and a changed best.pt of the epoch just saved (in the
        background unless ``wait``)."""
        self.uploader.submit(Path(trainer.last), Path(trainer.csv), Path(trainer.best))
        if wait:
            self.uploader.wait()

    def interrupt_mid_epoch(self, trainer: Any, notice: Notice) -> None:
        """Save a checkpoint that redoes the current epoch, upload it, send SpotInterrupted, stop."""
        self.interrupt_started.set()
        self.uploader.wait()  # the previous epoch's upload first: the newer PUT must land last
        epoch, epochs = trainer.epoch, trainer.epochs
        where = f"epoch {epoch + 1}/{epochs}, batch {self.batch}"
        if epoch >= 1:
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
            kept = "no epoch finished yet, so there is no checkpoint: the next attempt starts over"
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
