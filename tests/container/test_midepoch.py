"""The one module that reaches inside Ultralytics (spotyolo/trainer/ultralytics_midepoch.py) was
written against one release: these tests fail loudly on any other, before a resume goes wrong."""

from __future__ import annotations

import inspect

import ultralytics
from ultralytics.data import build
from ultralytics.engine import trainer

from spotyolo.trainer import checkpoint, ultralytics_midepoch


def test_written_for_the_installed_ultralytics() -> None:
    assert ultralytics.__version__ == ultralytics_midepoch.SUPPORTED_VERSION == "8.4.190", (
        f"Ultralytics {ultralytics.__version__} is installed; spotyolo/trainer/ultralytics_midepoch.py was "
        f"written for {ultralytics_midepoch.SUPPORTED_VERSION}. Read the new BaseTrainer._do_train, "
        "resume_training and InfiniteDataLoader against the lines this test pins, fix the module, then "
        "change SUPPORTED_VERSION (and the pin in pyproject.toml)."
    )
    assert ultralytics_midepoch.supported()
    assert ultralytics_midepoch.KEY == checkpoint.MIDEPOCH_KEY


def test_the_trainer_lines_the_module_relies_on_are_there() -> None:
    """Each line below is an assumption of ultralytics_midepoch (its docstring says which)."""
    loop = inspect.getsource(trainer.BaseTrainer._do_train)
    for line in (
        "nb = len(self.train_loader)",  # taken once, before the resumed epoch's shorter pass
        "pbar = TQDM(enumerate(self.train_loader), total=nb)",  # the batch index comes from here
        "self.tloss = None",  # reset before the loop: restored at the first resumed batch
        "ni = i + nb * epoch",
        "batch = self.preprocess_batch(batch)",  # after the warm-up, before the step check
        "if ni - last_opt_step >= self.accumulate:",
        'self.run_callbacks("on_train_batch_start")',
        'self.run_callbacks("on_train_epoch_end")',
        "self.optimizer.zero_grad()  # zero any resumed gradients",
    ):
        assert line in loop, f"BaseTrainer._do_train no longer has {line!r}"
    assert loop.index("self.tloss = None") < loop.index("for i, batch in pbar:")
    assert loop.index("batch = self.preprocess_batch(batch)") < loop.index("ni - last_opt_step")
    setup = inspect.getsource(trainer.BaseTrainer._setup_train)
    end = 'self.run_callbacks("on_pretrain_routine_end")'
    assert setup.index("self.resume_training(ckpt)") < setup.index(end)
    assert "self.scheduler.last_epoch = self.start_epoch - 1" in setup
    resume = inspect.getsource(trainer.BaseTrainer.resume_training)
    assert "assert 0 < start_epoch < self.epochs" in resume and "self._load_checkpoint_state(ckpt)" in resume
    assert '"model": None' in inspect.getsource(trainer.BaseTrainer.save_model)  # resume loads the EMA
    loader = inspect.getsource(build.InfiniteDataLoader)
    assert "for _ in range(len(self)):" in loader and "return len(self.batch_sampler.sampler)" in loader
    assert "yield from iter(self.sampler)" in inspect.getsource(build._RepeatSampler)
    assert "generator=generator" in inspect.getsource(build.build_dataloader)
