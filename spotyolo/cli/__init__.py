"""The ``spotyolo`` command line.

    spotyolo validate JOB_DIR                 check a job folder before uploading it
    spotyolo local JOB_DIR [--output DIR] [--interrupt-at-epoch N] [--chaos SEED] [--json]
    spotyolo local serve [--port 4566]        the emulator, for the real AWS CLI

Each subcommand's work lives in its own module, imported only when it runs (the local engine
pulls in the emulator, which is slow to import).
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spotyolo", description="YOLO training on EC2 spot, or all local.")
    sub = parser.add_subparsers(dest="command", required=True)

    validate = sub.add_parser("validate", help="check a local job folder (config.yaml + dataset/)")
    validate.add_argument("job_dir", help="folder with config.yaml and dataset/data.yaml")
    validate.add_argument("--json", action="store_true", help="print the dataset summary as JSON")

    local = sub.add_parser(
        "local",
        help="run the whole pipeline on this machine (or 'serve' the emulator)",
        description="`spotyolo local JOB_DIR` runs the job; `spotyolo local serve` keeps the emulator up.",
    )
    local.add_argument("job_dir", help="job folder, or 'serve'")
    local.add_argument("--output", help="where weights/<job>/ is copied (default ./outputs/<job>/)")
    local.add_argument(
        "--interrupt-at-epoch",
        type=int,
        action="append",
        default=[],
        metavar="N",
        help="announce a spot interruption during epoch N (repeatable)",
    )
    local.add_argument("--json", action="store_true", help="print one final summary object")
    local.add_argument(
        "--chaos",
        type=int,
        metavar="SEED",
        help="run the job under the fault schedule of SEED and check the guarantees (README, Guarantees)",
    )
    local.add_argument("--port", type=int, default=4566, help="emulator port for 'serve'")
    local.add_argument("--force", action="store_true", help="retrain even if weights exist")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "validate":
        from spotyolo.cli.validate import run_validate

        return run_validate(args)
    if args.command == "local":
        from spotyolo.local.cli import run_local, run_serve

        return run_serve(args) if args.job_dir == "serve" else run_local(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
