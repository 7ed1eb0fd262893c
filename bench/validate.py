"""Benchmark: Validate job's dataset check vs `aws s3 sync` of the same labels, in the emulator.

    .venv/bin/python bench/validate.py [--pairs 10000] [--workers 32]

Starts moto's server in its own process (so it does not share our interpreter), uploads
``--pairs`` image/label pairs under jobs/bench/dataset/train/{images,labels}/ (tiny objects:
listing and label reading are what is measured), then times

* the validation: ``spotyolo.core.dataset.inspect_dataset`` over the S3 prefix (one paginated
  listing of the whole dataset, every label file read and checked, bounded thread pool), and
* the AWS CLI: ``aws s3 sync s3://.../dataset/train/labels/ <tmp>`` (lists and downloads the
  labels folder only, with the CLI's default concurrency),

and prints one markdown table row for bench/README.md. Goal: ratio (validation / CLI) <= 1.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
from botocore.config import Config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spotyolo.core.dataset import S3Source, inspect_dataset  # noqa: E402

BUCKET = "bench"
PREFIX = "jobs/bench/"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(port: int, timeout: float = 30) -> None:
    end = time.time() + timeout
    while time.time() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError("moto server did not start")


def label_text(rng: random.Random) -> bytes:
    lines = [
        f"{rng.randrange(3)} {rng.uniform(0.2, 0.8):.6f} {rng.uniform(0.2, 0.8):.6f} "
        f"{rng.uniform(0.05, 0.3):.6f} {rng.uniform(0.05, 0.3):.6f}"
        for _ in range(rng.randint(1, 8))
    ]
    return ("\n".join(lines) + "\n").encode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=32)
    args = parser.parse_args()

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(port)
        os.environ.update(
            {k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
        )
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            config=Config(max_pool_connections=args.workers),
        )
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(
            Bucket=BUCKET,
            Key=PREFIX + "dataset/data.yaml",
            Body=b"train: train/images\nval: train/images\nnames: [a, b, c]\n",
        )
        rng = random.Random(0)
        objects = []
        for i in range(args.pairs):
            objects.append((f"{PREFIX}dataset/train/images/{i:06d}.jpg", b"\xff\xd8jpeg"))
            objects.append((f"{PREFIX}dataset/train/labels/{i:06d}.txt", label_text(rng)))
        started = time.perf_counter()
        with ThreadPoolExecutor(args.workers) as pool:
            list(pool.map(lambda kv: s3.put_object(Bucket=BUCKET, Key=kv[0], Body=kv[1]), objects))
        print(f"uploaded {len(objects)} objects in {time.perf_counter() - started:.1f} s", file=sys.stderr)

        started = time.perf_counter()
        summary, problems = inspect_dataset(S3Source(s3, BUCKET, PREFIX), max_workers=args.workers)
        ours = time.perf_counter() - started
        assert not problems, problems[:3]
        assert summary.splits["train"].images == args.pairs and summary.splits["train"].labels == args.pairs

        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            subprocess.run(
                [
                    str(Path(sys.executable).parent / "aws"),
                    "--endpoint-url",
                    endpoint,
                    "s3",
                    "sync",
                    "--only-show-errors",
                    f"s3://{BUCKET}/{PREFIX}dataset/train/labels/",
                    tmp,
                ],
                env=env,
                check=True,
            )
            cli = time.perf_counter() - started
            downloaded = sum(1 for _ in Path(tmp).iterdir())
        assert downloaded == args.pairs, downloaded
    finally:
        server.terminate()
        server.wait(timeout=10)

    print(
        f"validation: {ours:.2f} s, aws s3 sync of the labels: {cli:.2f} s, ratio {ours / cli:.2f}",
        file=sys.stderr,
    )
    print(
        f"| validate: {args.pairs} image/label pairs (list + read + check), {args.workers} threads "
        f"| {ours:.2f} s | `aws s3 sync` labels: {cli:.2f} s | {ours / cli:.2f} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
