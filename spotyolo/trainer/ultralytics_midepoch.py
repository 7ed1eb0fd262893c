"""Mid-epoch checkpoints for Ultralytics 8.4.190: on a spot notice, save the position inside
the epoch; the next attempt continues at the next batch instead of redoing the epoch.

Ultralytics resumes only at epoch boundaries, and its checkpoint holds the EMA (as fp16) but
not the live weights. A mid-epoch checkpoint is Ultralytics' own ``last.pt`` recorded as the
previous epoch's (so ``resume=True`` restarts the interrupted epoch), with the EMA and the
optimizer kept in fp32 and one more key, :data:`KEY`: the epoch and batches done, the epoch's
sample order and what is left of it, the RNG states (Python, NumPy, torch, CUDA, the train
loader's generator), the running loss means, the live fp32 weights, the gradients accumulated
since the last optimizer step and that step's position, and the mosaic buffer.

What this module reaches inside Ultralytics for (every other piece goes through callbacks and
the trainer's public attributes); ``tests/container/test_midepoch.py`` pins the version and the
source lines each one relies on:

- the train loader's sampler chain (``train_loader.batch_sampler.sampler.sampler``) is wrapped,
  so each epoch's order is recorded and a resumed epoch yields only the batches not done yet
  (its length is the rest of the epoch while that epoch starts, so ``InfiniteDataLoader``
  stops there; ``nb`` was taken before, so the warm-up's ``ni = i + nb * epoch`` holds);
- ``ultralytics.engine.trainer.TQDM`` is replaced for the one resumed epoch: the loop's batch
  index ``i`` (from ``enumerate``) starts at the first batch not done, and the progress bar at it;
- ``trainer.preprocess_batch`` is wrapped (it runs between the warm-up and the optimizer-step
  check): it records the samples consumed, and until the first optimizer step after a resume
  it sets ``trainer.accumulate`` so that the loop's ``ni - last_opt_step >= accumulate`` (with
  ``last_opt_step`` a local reset to -1) steps where the uninterrupted run stepped;
- ``trainer.resume_training`` is replaced when the interrupted epoch is the first one (its
  assertion refuses ``start_epoch == 0``), calling ``trainer._load_checkpoint_state``.

Exactness (``bench/README.md``): on the CPU with ``workers: 0`` a resumed run replays the same
samples with the same augmentations and optimizer steps as the uninterrupted one. With
dataloader workers the augmentations run in worker processes whose RNG states are not saved:
the rest of the epoch has the same samples, augmented differently.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spotyolo.trainer.checkpoint import MIDEPOCH_KEY

log = logging.getLogger(__name__)

#: the Ultralytics release this module was written against (its trainer's internals)
SUPPORTED_VERSION = "8.4.190"
#: the checkpoint key that makes a last.pt a mid-epoch checkpoint
KEY = MIDEPOCH_KEY
FORMAT = 1


def supported() -> bool:
    import ultralytics

    return str(ultralytics.__version__) == SUPPORTED_VERSION


def read_state(path: Path) -> dict[str, Any] | None:
    """The mid-epoch state of checkpoint ``path``, or None for an epoch-boundary checkpoint."""
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    state = ckpt.get(KEY)
    return state if isinstance(state, dict) and state.get("format") == FORMAT else None


# ---------------------------------------------------------------- RNG states


def _rng_states() -> dict[str, Any]:
    import numpy as np
    import torch

    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict[str, Any]) -> None:
    import numpy as np
    import torch

    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    cuda = states.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


# ---------------------------------------------------------------- the sampler


@dataclass
class _Replay:
    """What is left of an interrupted epoch, served once by :class:`RecordingSampler`."""

    order: list[int]
    remaining: list[int]
    generator: Any
    rng: dict[str, Any]
    served: bool = False


class RecordingSampler:
    """Wraps the train loader's sampler. Each pass materialises its order and records it with
    the loader generator's state after drawing it; a pending :class:`_Replay` is served instead
    of a new pass (the rest of an interrupted epoch, with the RNG states of that moment)."""

    def __init__(self, inner: Any, generator: Any) -> None:
        self.inner = inner
        self.generator = generator
        #: (order, generator state after drawing it), oldest first; workers prefetch ahead
        self.orders: deque[tuple[list[int], Any]] = deque(maxlen=4)
        self.replay: _Replay | None = None

    def __len__(self) -> int:
        if self.replay is not None:  # until the resumed epoch's first batch: its rest only
            return len(self.replay.remaining)
        return len(self.inner)

    def __iter__(self) -> Iterator[int]:
        replay = self.replay
        if replay is not None and not replay.served:
            replay.served = True
            if self.generator is not None and replay.generator is not None:
                self.generator.set_state(replay.generator)
            _set_rng_states(replay.rng)
            self.orders.append((replay.order, replay.generator))
            yield from replay.remaining
            return
        order = [int(k) for k in self.inner]
        self.orders.append((order, self.generator.get_state() if self.generator is not None else None))
        yield from order

    def order_of(self, consumed: list[int]) -> tuple[list[int], Any] | None:
        """The recorded order whose start is ``consumed`` (the samples of this epoch so far)."""
        for order, state in self.orders:
            if order[: len(consumed)] == consumed:
                return order, state
        done = set(consumed)
        for order, state in self.orders:  # same samples, other order: keep coverage exact
            if done <= set(order):
                return order, state
        return None


def _install_sampler(loader: Any) -> RecordingSampler | None:
    batch_sampler = getattr(getattr(loader, "batch_sampler", None), "sampler", None)  # _RepeatSampler.sampler
    inner = getattr(batch_sampler, "sampler", None)
    if batch_sampler is None or inner is None:
        return None
    if isinstance(inner, RecordingSampler):
        return inner
    sampler = RecordingSampler(inner, getattr(loader, "generator", None))
    batch_sampler.sampler = sampler
    return sampler


def _engine() -> Any:
    import importlib

    return importlib.import_module("ultralytics.engine.trainer")


def _shift_progress(offset: int) -> None:
    """The training loop's next ``TQDM(enumerate(train_loader), total=nb)`` counts from ``offset``."""
    engine = _engine()
    original = engine.TQDM

    def shifted(iterable: Any = None, *args: Any, **kwargs: Any) -> Any:
        engine.TQDM = original
        kwargs["initial"] = offset
        return original(((i + offset, item) for i, item in iterable), *args, **kwargs)

    shifted.original = original  # type: ignore[attr-defined]
    engine.TQDM = shifted


def _unshift_progress() -> None:
    engine = _engine()
    original = getattr(engine.TQDM, "original", None)
    if original is not None:
        engine.TQDM = original


# ---------------------------------------------------------------- the callbacks


class MidEpoch:
    """Callbacks that track the position inside the epoch (:meth:`save` writes it), and restore
    a mid-epoch checkpoint's position when the attempt resumes from one (``state``)."""

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        self.enabled = supported()
        if not self.enabled:
            import ultralytics

            log.warning(
                "Ultralytics %s is not %s: spot notices checkpoint at epoch boundaries only",
                ultralytics.__version__,
                SUPPORTED_VERSION,
            )
        self.state = state if self.enabled else None
        self.trainer: Any = None
        self.sampler: RecordingSampler | None = None
        self._loader: Any = None
        self.nb = 0
        self.epoch = -1
        #: the loop's batch index of the batch in progress (or just done)
        self.i = -1
        #: ni of the last optimizer step (the loop's ``last_opt_step``)
        self.last_step = -1
        self._updates: int | None = None
        self._files: dict[str, int] | None = None
        self.consumed: list[int] = []
        #: batches of the resumed epoch already done (0: not resuming inside this epoch)
        self.first = 0
        self._resume_epoch = -1
        self._apply_at_first_batch = False
        self._adjusting = False
        self._accumulate: int | None = None
        self._last_loss: Any = None

    def attach(self, model: Any) -> None:
        if not self.enabled:
            return
        model.add_callback("on_pretrain_routine_start", self.on_pretrain_routine_start)
        model.add_callback("on_pretrain_routine_end", self.on_pretrain_routine_end)
        model.add_callback("on_train_start", self.on_train_start)
        model.add_callback("on_train_epoch_start", self.on_train_epoch_start)
        model.add_callback("on_train_batch_start", self.on_train_batch_start)
        model.add_callback("on_train_batch_end", self.on_train_batch_end)
        model.add_callback("on_train_epoch_end", self.on_train_epoch_end)

    # ------------------------------------------------------------ set-up

    def on_pretrain_routine_start(self, trainer: Any) -> None:
        if self.state is not None and int(self.state["epoch"]) == 0:
            # Ultralytics' resume_training asserts start_epoch > 0: an interrupted first epoch
            # restores the same state itself
            def resume_training(ckpt: Any) -> None:
                if ckpt is None or not trainer.resume:
                    return
                trainer._load_checkpoint_state(ckpt)
                trainer.start_epoch = 0

            trainer.resume_training = resume_training

    def on_pretrain_routine_end(self, trainer: Any) -> None:
        self.trainer = trainer
        self._install(trainer)
        original = trainer.preprocess_batch

        def preprocess_batch(batch: Any) -> Any:
            self._record(batch)
            self._adjust_accumulate(trainer)
            return original(batch)

        trainer.preprocess_batch = preprocess_batch
        state = self.state
        if state is None:
            return
        problem = self._incompatible(trainer, state)
        if problem:
            log.warning("mid-epoch state not used (%s): epoch %d starts over", problem, state["epoch"] + 1)
            self.state = None
            return
        from ultralytics.utils.torch_utils import unwrap_model

        unwrap_model(trainer.model).load_state_dict(state["model"])  # the live weights, not the EMA
        epoch = int(state["epoch"])
        trainer.start_epoch = epoch
        trainer.scheduler.last_epoch = epoch - 1
        self.last_step = int(state["last_step"])
        self._resume_epoch = epoch
        self.first = int(state["batches_done"])

    def _incompatible(self, trainer: Any, state: dict[str, Any]) -> str:
        loader = trainer.train_loader
        if getattr(trainer, "world_size", 0) > 1:
            return "multi-GPU training"
        if self.sampler is None:
            return "the train loader has no sampler to replay"
        if loader.batch_size != state["batch_size"]:
            return f"batch size {loader.batch_size}, the checkpoint's is {state['batch_size']}"
        if len(loader.dataset) != state["samples"]:
            return f"{len(loader.dataset)} training images, the checkpoint's epoch had {state['samples']}"
        return ""

    def _install(self, trainer: Any) -> None:
        loader = trainer.train_loader
        if loader is not self._loader:
            self._loader = loader
            self.sampler = _install_sampler(loader)
            files = getattr(loader.dataset, "im_files", None)
            self._files = {str(f): k for k, f in enumerate(files)} if files else None

    def on_train_start(self, trainer: Any) -> None:
        self.nb = len(trainer.train_loader)

    # ------------------------------------------------------------ each epoch and batch

    def on_train_epoch_start(self, trainer: Any) -> None:
        self._install(trainer)  # an OOM retry rebuilds the loader
        if trainer.epoch == self.epoch:  # the epoch restarts (OOM, NaN recovery): so does the step count
            self.last_step = -1
            self.first = 0
            self.state = None
        self.epoch = trainer.epoch
        self.consumed = []
        self._updates = _ema_updates(trainer)
        state = self.state
        if state is None or trainer.epoch != self._resume_epoch or self.sampler is None:
            self.i = -1
            return
        self.i = self.first - 1
        left = set(state["remaining"])
        self.consumed = [k for k in state["order"] if k not in left]
        self.sampler.replay = _Replay(
            state["order"], list(state["remaining"]), state["generator"], state["rng"]
        )
        _restore_buffer(trainer.train_loader.dataset, state.get("buffer") or [])
        if not state["remaining"]:  # taken after the epoch's last batch: the loop runs no batch
            from ultralytics.utils.torch_utils import unwrap_model

            model: Any = unwrap_model(trainer.model)  # its loss, made by a first batch, is read at the end
            if getattr(model, "criterion", None) is None and hasattr(model, "init_criterion"):
                model.criterion = model.init_criterion()
        _shift_progress(self.first)
        self._apply_at_first_batch = True
        self._adjusting = True
        log.info(
            "continuing epoch %d/%d at batch %d/%d (%s in the checkpoint)",
            trainer.epoch + 1,
            trainer.epochs,
            self.first + 1,
            self.nb,
            f"batches 1-{self.first} are" if self.first > 1 else "batch 1 is",
        )

    def on_train_batch_start(self, trainer: Any) -> None:
        self.i += 1
        if self._apply_at_first_batch:
            self._apply_at_first_batch = False
            _unshift_progress()
            if self.sampler is not None:
                self.sampler.replay = None  # its length is the full epoch again
            self._restore_batch_state(trainer)

    def _restore_batch_state(self, trainer: Any) -> None:
        state = self.state
        assert state is not None
        from ultralytics.utils.torch_utils import unwrap_model

        tloss = state["tloss"]
        trainer.tloss = {k: v.to(trainer.device) for k, v in tloss.items()} if tloss else None
        self._last_loss = state.get("loss")
        grads = state.get("grads") or {}
        if grads:  # accumulated since the last optimizer step (the loop zeroed them at its start)
            for name, param in unwrap_model(trainer.model).named_parameters():
                if name in grads:
                    param.grad = grads[name].to(device=param.device, dtype=param.dtype).clone()
        self.state = None

    def _record(self, batch: Any) -> None:
        files = batch.get("im_file") if isinstance(batch, dict) else None
        if self._files is not None and files is not None:
            self.consumed.extend(self._files.get(str(f), -1) for f in files)

    def _adjust_accumulate(self, trainer: Any) -> None:
        """Until the first optimizer step after a resume, the loop's ``last_opt_step`` is -1:
        make ``ni - (-1) >= accumulate`` true exactly where ``ni - last_step >= accumulate`` is."""
        if not self._adjusting:
            return
        ni = self.i + self.nb * trainer.epoch
        accumulate = int(trainer.accumulate)
        self._accumulate = accumulate
        step = ni - self.last_step >= accumulate
        trainer.accumulate = min(accumulate, ni + 1) if step else ni + 2

    def on_train_batch_end(self, trainer: Any) -> None:
        if self._accumulate is not None:
            trainer.accumulate, self._accumulate = self._accumulate, None
        updates = _ema_updates(trainer)
        if updates is not None and updates != self._updates:  # an optimizer step in this batch
            self.last_step = self.i + self.nb * trainer.epoch
            self._adjusting = False
        self._updates = updates

    def on_train_epoch_end(self, trainer: Any) -> None:
        if self._apply_at_first_batch:  # the checkpoint was taken after the epoch's last batch
            self._apply_at_first_batch = False
            _unshift_progress()
            self._serve_empty_replay(trainer.train_loader)
            self._restore_batch_state(trainer)
            if trainer.tloss:  # what the first batch sets and the epoch's validation reads
                trainer.loss_items = dict(trainer.tloss)
                trainer.loss_names = tuple(trainer.tloss)
            if trainer.loss is None and self._last_loss is not None:  # validate() evaluates -loss eagerly
                trainer.loss = self._last_loss.to(trainer.device)

    def _serve_empty_replay(self, loader: Any) -> None:
        """No batch was left, so the loader never asked the sampler: make its iterator (the first
        batch does; it draws a seed from the loader's generator) and restore the RNG states after."""
        sampler = self.sampler
        if sampler is None or sampler.replay is None:
            return
        if getattr(loader, "iterator", 1) is None:
            loader.iterator = loader._get_iterator()
        replay, sampler.replay = sampler.replay, None
        if not replay.served:
            sampler.replay = replay
            for _ in sampler:  # serves the (empty) replay: states restored, order recorded
                pass
            sampler.replay = None

    # ------------------------------------------------------------ the checkpoint

    def can_save(self, trainer: Any) -> str:
        """Why a mid-epoch checkpoint cannot be taken now ('' when it can)."""
        if not self.enabled:
            return f"Ultralytics is not {SUPPORTED_VERSION}"
        if getattr(trainer, "world_size", 0) > 1:
            return "multi-GPU training"
        if self.sampler is None or self.i < 0 or trainer.epoch != self.epoch:
            return "no batch of this epoch has run"
        if self._order(trainer) is None:
            return "the epoch's sample order is unknown"
        return ""

    def _order(self, trainer: Any) -> tuple[list[int], Any] | None:
        if self.sampler is None or any(k < 0 for k in self.consumed):
            return None
        return self.sampler.order_of(self.consumed)

    def save(self, trainer: Any) -> bool:
        """Write trainer.last as a mid-epoch checkpoint after the batch that just ended."""
        if self.can_save(trainer):
            return False
        rng = _rng_states()  # first: nothing below may draw from them
        import torch
        from ultralytics.utils.torch_utils import unwrap_model

        found = self._order(trainer)
        assert found is not None
        order, generator = found
        done = set(self.consumed)
        remaining = [k for k in order if k not in done]
        grads = {
            name: p.grad.detach().to("cpu", copy=True)
            for name, p in unwrap_model(trainer.model).named_parameters()
            if p.grad is not None
        }
        # Ultralytics' own checkpoint, recorded as the previous epoch's so that a resume restarts
        # this one; best.pt and the save_period copies are left alone
        best, period = trainer.best, trainer.save_period
        scratch = Path(trainer.wdir) / "interrupted-best.pt"
        trainer.epoch -= 1
        trainer.best, trainer.save_period = scratch, -1
        try:
            trainer.save_model()
        finally:
            trainer.epoch += 1
            trainer.best, trainer.save_period = best, period
            scratch.unlink(missing_ok=True)
        last = Path(trainer.last)
        ckpt = torch.load(last, map_location="cpu", weights_only=False)
        ema = ckpt["ema"].float()  # fp32, as training holds it (save_model halves it)
        ema.load_state_dict(trainer.ema.ema.state_dict())
        ckpt["ema"] = ema
        ckpt["optimizer"] = trainer.optimizer.state_dict()  # fp32 too
        dataset = trainer.train_loader.dataset
        ckpt[KEY] = {
            "format": FORMAT,
            "ultralytics": SUPPORTED_VERSION,
            "epoch": int(trainer.epoch),
            "batches_done": self.i + 1,
            "batches": self.nb,
            "batch_size": trainer.train_loader.batch_size,
            "samples": len(dataset),
            "order": order,
            "remaining": remaining,
            "generator": generator,
            "rng": rng,
            "tloss": {k: v.detach().cpu() for k, v in trainer.tloss.items()} if trainer.tloss else None,
            "loss": trainer.loss.detach().cpu() if trainer.loss is not None else None,
            "model": {k: v.detach().cpu() for k, v in unwrap_model(trainer.model).state_dict().items()},
            "grads": grads,
            "last_step": self.last_step,
            "buffer": list(buffer) if isinstance(buffer := getattr(dataset, "buffer", None), list) else [],
        }
        tmp = last.with_name(last.name + ".tmp")
        torch.save(ckpt, tmp)
        tmp.replace(last)
        return True


def _ema_updates(trainer: Any) -> int | None:
    ema = getattr(trainer, "ema", None)
    return int(ema.updates) if ema is not None else None


def _restore_buffer(dataset: Any, indices: list[int]) -> None:
    """Mosaic draws its partner images from the images loaded last: load them again, in order."""
    buffer = getattr(dataset, "buffer", None)
    if not isinstance(buffer, list) or not indices or not hasattr(dataset, "load_image"):
        return
    buffer.clear()
    for k in indices:
        if dataset.ims[k] is None:
            dataset.load_image(k)
