"""``spotyolo validate JOB_DIR``: the Validate job checks on a local folder, before uploading.

Same code and same messages as the Lambda (files are named relative to the job folder instead
of by S3 key). Exit status 0 when the job is valid, 1 when it is not.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from spotyolo.contract.layout import JOB_NAME_RE
from spotyolo.core.config import inspect_job
from spotyolo.core.dataset import LocalSource
from spotyolo.core.models import DatasetSummary
from spotyolo.core.yamlsafe import problems_error

#: classes named per split in the table; the rest are summed
TABLE_CLASSES = 12


def summary_table(summary: DatasetSummary) -> str:
    """Per-split counts as a small text table."""
    rows = [("split", "images", "labels", "backgrounds", "instances per class")]
    for split, counts in summary.splits.items():
        items = list(summary.per_class.get(split, {}).items())
        per_class = ", ".join(f"{name} {n}" for name, n in items[:TABLE_CLASSES])
        if len(items) > TABLE_CLASSES:
            rest = sum(n for _, n in items[TABLE_CLASSES:])
            per_class += f", ... {len(items) - TABLE_CLASSES} more classes {rest}"
        rows.append((split, str(counts.images), str(counts.labels), str(counts.backgrounds), per_class))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0]), *(row[i].rjust(widths[i]) for i in (1, 2, 3)), row[4]]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def run_validate(args: argparse.Namespace) -> int:
    job_dir = Path(args.job_dir)
    if not job_dir.is_dir():
        print(f"{job_dir}: not a folder; give the job folder (config.yaml + dataset/)", file=sys.stderr)
        return 1
    config, summary, problems = inspect_job(LocalSource(job_dir))
    if problems or config is None:
        print(str(problems_error(problems, f"job folder {job_dir}")), file=sys.stderr)
        return 1
    if getattr(args, "json", False):
        print(
            json.dumps(
                {
                    "config": config.model_dump(mode="json"),
                    "dataset": {
                        **summary.model_dump(mode="json"),
                        "names": summary.names,
                        "per_class": summary.per_class,
                    },
                }
            )
        )
        return 0
    name = job_dir.resolve().name
    size = f"{summary.bytes / 1e6:.1f} MB"
    print(f"{job_dir}: valid. {summary.files} dataset files, {size}, {len(summary.names)} classes")
    print(summary_table(summary))
    for warning in summary.warnings:
        print(f"note: {warning}")
    if not JOB_NAME_RE.match(name):
        print(
            f"note: {name!r} is not a valid job name; upload it as jobs/<name>/ with a-z, 0-9, '.', '_', '-'"
        )
    print(f"upload: aws s3 sync {job_dir} s3://<bucket>/jobs/{name if JOB_NAME_RE.match(name) else '<job>'}/")
    return 0
