"""Checks that this machine can train the job at all, before any download or training.

A failure here is ``PreflightFailed``, which the state machine does not retry: the same
machine type would fail again. Each message says what was found, what was needed and the fix.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spotyolo.contract.errors import PreflightFailed

GIB = 1024**3
MIB = 1024**2
#: room beyond the dataset: checkpoints, label caches, plots, the Ultralytics run folder
DISK_MARGIN = 1 * GIB
#: the smallest /dev/shm that data loader workers get along with (Docker's default is 64 MiB)
SHM_FLOOR = 256 * MIB
#: Ultralytics' DataLoader prefetch factor
PREFETCH = 2


@dataclass
class MachineFacts:
    """What preflight looked at (injectable, so each check is testable without the hardware)."""

    cuda_available: bool
    cuda_devices: int
    cuda_error: str | None
    free_disk: int
    shm_bytes: int | None  # None: no /dev/shm on this OS

    @classmethod
    def probe(cls, workdir: Path, need_gpu: bool) -> MachineFacts:
        available, count, error = False, 0, None
        if need_gpu:
            try:
                import torch

                available = bool(torch.cuda.is_available())
                count = torch.cuda.device_count() if available else 0
                if available:
                    torch.zeros(1, device="cuda").add_(1).cpu()  # a driver that lists but cannot run
            except Exception as err:  # a broken driver raises all kinds of things
                available, error = False, f"{type(err).__name__}: {err}"
        shm: int | None = None
        if Path("/dev/shm").is_dir():
            shm = shutil.disk_usage("/dev/shm").total
        return cls(available, count, error, shutil.disk_usage(workdir).free, shm)


def shm_needed(workers: int, batch: Any, imgsz: Any) -> int:
    """Shared memory for ``workers`` loader processes, each prefetching uint8 batches."""
    size = max(imgsz) if isinstance(imgsz, list | tuple) else int(imgsz or 640)
    per_batch = (int(batch) if isinstance(batch, int) and batch > 0 else 16) * 3 * size * size
    return max(SHM_FLOOR, workers * PREFETCH * per_batch)


def check(
    facts: MachineFacts,
    *,
    need_gpu: bool,
    gpus: int,
    dataset_bytes: int,
    present_bytes: int,
    workers: int,
    batch: Any,
    imgsz: Any,
    why_gpu: str,
) -> None:
    """Raise ``PreflightFailed`` for the first check that fails."""
    if need_gpu and (not facts.cuda_available or facts.cuda_devices < gpus):
        found = (
            f"torch.cuda.is_available() is {facts.cuda_available}, {facts.cuda_devices} device(s)"
            + (f", error {facts.cuda_error}" if facts.cuda_error else "")
            + f", CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')}"
        )
        raise PreflightFailed(
            f"no usable GPU: found {found}; needed {gpus} CUDA device(s) ({why_gpu}). Fix: use a GPU "
            "instance type with the NVIDIA driver (the ECS GPU AMI) and run the container with "
            "'--gpus all'."
        )
    needed = max(0, dataset_bytes - present_bytes) + DISK_MARGIN
    if facts.free_disk < needed:
        raise PreflightFailed(
            f"not enough disk: found {facts.free_disk / GIB:.1f} GiB free, needed {needed / GIB:.1f} GiB "
            f"(dataset {dataset_bytes / GIB:.2f} GiB + {DISK_MARGIN / GIB:.0f} GiB for checkpoints). Fix: "
            "raise ROOT_VOLUME_BASE_GB of the deployment, or shrink the dataset."
        )
    if workers > 0 and facts.shm_bytes is not None:
        need_shm = shm_needed(workers, batch, imgsz)
        if facts.shm_bytes < need_shm:
            raise PreflightFailed(
                f"/dev/shm too small for {workers} data loader workers: "
                f"found {facts.shm_bytes / MIB:.0f} MiB, needed {need_shm / MIB:.0f} MiB. "
                "Fix: run the container with '--ipc=host' (or "
                "'--shm-size=8g'), or set 'workers: 0' in config.yaml."
            )
