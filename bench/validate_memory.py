"""Benchmark: the memory Validate's check takes at the job-size limit, in-process, no disk or S3.

    .venv/bin/python bench/validate_memory.py [--files 300000] [--labels 0.5]

Builds a job in memory with ``--files`` dataset files (images, and a label for ``--labels`` of
them, each label one bad line so every one is also a problem), runs
``spotyolo.core.config.inspect_job`` over it and prints the peak traced memory (tracemalloc),
the refusal's length and the time. The Validate Lambda has 512 MB.
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from collections.abc import Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spotyolo.core.config import inspect_job
from spotyolo.core.dataset import Entry
from spotyolo.core.yamlsafe import problems_error


class MemorySource:
    """``count`` images under dataset/images/train/, a label for some: nothing stored per file."""

    def __init__(self, count: int, labelled: float) -> None:
        self.count, self.every = count, max(1, round(1 / labelled)) if labelled else 0

    def list(self, prefix: str = "") -> Iterable[Entry]:
        yield Entry("config.yaml", 40, 0.0)
        yield Entry("dataset/data.yaml", 60, 0.0)
        for i in range(self.count):
            yield Entry(f"dataset/images/train/img_{i:07d}.jpg", 50_000, 0.0)
            if self.every and i % self.every == 0:
                yield Entry(f"dataset/labels/train/img_{i:07d}.txt", 20, 0.0)
        yield Entry("dataset/images/val/v.jpg", 50_000, 0.0)

    def read(self, path: str) -> bytes:
        if path == "config.yaml":
            return b"model: yolo11n.yaml\nepochs: 3\n"
        if path.endswith("data.yaml"):
            return b"train: images/train\nval: images/val\nnames: [a, b]\n"
        return b"7 0.5 0.5 0.1 0.1\n"

    def where(self, path: str) -> str:
        return "jobs/bench/" + path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=300_000)
    parser.add_argument("--labels", type=float, default=0.5)
    args = parser.parse_args()
    images = int(args.files / (1 + args.labels))
    tracemalloc.start()
    started = time.monotonic()
    _, _, problems = inspect_job(MemorySource(images, args.labels))
    message = str(problems_error(problems, "job 'bench'"))
    seconds = time.monotonic() - started
    _, peak = tracemalloc.get_traced_memory()
    print(
        f"| validate memory: {args.files} files ({images} images), every label bad | "
        f"peak {peak / 2**20:.0f} MiB traced, {seconds:.1f} s | Lambda: 512 MB | "
        f"refusal {len(message)} chars, {message.splitlines()[0]} |"
    )


if __name__ == "__main__":
    main()
