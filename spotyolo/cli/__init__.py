"""The ``spotyolo`` command line.

    spotyolo validate JOB_DIR                 check a job folder before uploading it
    spotyolo local JOB_DIR [--output DIR] [--interrupt-at-epoch N] [--chaos SEED [--jobs K]]
                         [--max-instances N] [--json]
    spotyolo local serve [--port 4566] [--max-instances N]   the emulator, for the real AWS CLI
    spotyolo submit DIR | status [JOB] | logs JOB | cancel JOB | retrain JOB | weights JOB
                                              operate a deployment (AWS or `local serve`)

Each subcommand's work lives in its own module, imported only when it runs (the local engine
pulls in the emulator, which is slow to import).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def build_parser() -> argparse.ArgumentParser:
    from spotyolo.cli.exits import EXIT_CODES_HELP

    parser = argparse.ArgumentParser(
        prog="spotyolo", description="YOLO training on EC2 spot, or all local.", epilog=EXIT_CODES_HELP
    )
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
    local.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="K",
        help="with --chaos: K copies of the job at once through the instance-slot queue, under SEED's "
        "queue schedule (its EC2 quota, 1 or 2 instances, and max_instances are drawn from SEED)",
    )
    local.add_argument("--port", type=int, default=4566, help="emulator port for 'serve'")
    local.add_argument(
        "--max-instances",
        type=_at_least_zero,
        metavar="N",
        help="the emulated account's EC2 quotas: N instances of the default types at once, spot and "
        "on-demand each (EC2 Fleet refuses beyond, Service Quotas answers N x their vCPUs); "
        "default: no limit",
    )
    local.add_argument("--force", action="store_true", help="retrain even if weights exist")
    _operations(sub)
    return parser


def _at_least_zero(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is not a number of instances (0 or more)")
    return value


def _operations(sub: Any) -> None:
    """The commands that operate a deployment, found by its stack's outputs."""
    from spotyolo.cli.exits import EXIT_CODES_HELP
    from spotyolo.contract.outputs import DEFAULT_STACK

    where = argparse.ArgumentParser(add_help=False)
    where.add_argument(
        "--stack", default=DEFAULT_STACK, help=f"the stack to operate (default {DEFAULT_STACK})"
    )
    where.add_argument(
        "--endpoint-url",
        metavar="URL",
        help="`spotyolo local serve`'s address, e.g. http://127.0.0.1:4566 "
        "(default: $AWS_ENDPOINT_URL, else AWS)",
    )

    def add(name: str, text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(
            name, parents=[where], help=text, description=text, epilog=EXIT_CODES_HELP
        )
        return parser

    submit = add("submit", "check a job folder, upload it (config.yaml last) and start its training")
    submit.add_argument("dir", help="job folder: config.yaml + dataset/")
    submit.add_argument("--job", help="job name (default: the folder's name)")
    submit.add_argument(
        "--wait", action="store_true", help="follow the run to its end; exit 0 only on success"
    )
    submit.add_argument("--json", action="store_true", help="print one result object instead of text")

    status = add("status", "the table of jobs, or one job's attempts, cost and states")
    status.add_argument("job", nargs="?", help="one job")
    status.add_argument("--json", action="store_true", help="the same as data")

    logs = add("logs", "the trainer's log of a job's current or last attempt (CloudWatch Logs)")
    logs.add_argument("job")
    logs.add_argument("--attempt", type=int, metavar="N", help="attempt N of the job's last run")
    logs.add_argument("--follow", action="store_true", help="keep printing while the attempt runs")

    cancel = add("cancel", "stop a job's run; returns once its instance is terminated and its lock released")
    cancel.add_argument("job")
    cancel.add_argument("--timeout", type=float, default=300, help="seconds to wait for the clean up")

    retrain = add("retrain", "train a job again, optionally with config.yaml values overridden")
    retrain.add_argument("job")
    retrain.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one config.yaml value")
    retrain.add_argument(
        "--wait", action="store_true", help="follow the run to its end; exit 0 only on success"
    )
    retrain.add_argument("--json", action="store_true", help="print one result object instead of text")

    weights = add("weights", "download weights/<job>/: the weights, the metrics and the plots")
    weights.add_argument("job")
    weights.add_argument("--to", metavar="DIR", help="destination (default ./outputs/<job>/)")
    weights.add_argument("--json", action="store_true", help="print the files as JSON")


_OPERATIONS = {
    "submit": ("spotyolo.cli.submit", "run_submit"),
    "status": ("spotyolo.cli.status", "run_status"),
    "logs": ("spotyolo.cli.manage", "run_logs"),
    "cancel": ("spotyolo.cli.manage", "run_cancel"),
    "retrain": ("spotyolo.cli.manage", "run_retrain"),
    "weights": ("spotyolo.cli.manage", "run_weights"),
}


def _operate(args: argparse.Namespace) -> int:
    """Run an operation; every expected failure is one line on stderr and an exit code."""
    import importlib

    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

    from spotyolo.cli import exits

    module, function = _OPERATIONS[args.command]
    try:
        code: int = getattr(importlib.import_module(module), function)(args)
        return code
    except exits.CliError as err:
        print(f"spotyolo {args.command}: {err}", file=sys.stderr)
        return err.code
    except KeyboardInterrupt:
        print(f"spotyolo {args.command}: interrupted (a started run goes on)", file=sys.stderr)
        return exits.INTERRUPTED
    except EndpointConnectionError as err:
        print(
            f"spotyolo {args.command}: cannot reach {err.kwargs.get('endpoint_url')}: "
            "is `spotyolo local serve` running?",
            file=sys.stderr,
        )
        return exits.NO_DEPLOYMENT
    except NoCredentialsError:
        print(
            f"spotyolo {args.command}: no AWS credentials: `aws configure` or set AWS_PROFILE",
            file=sys.stderr,
        )
        return exits.NO_DEPLOYMENT
    except ClientError as err:
        print(f"spotyolo {args.command}: AWS refused {err.operation_name}: {err}", file=sys.stderr)
        return exits.FAILED
    except BotoCoreError as err:
        print(f"spotyolo {args.command}: {err}", file=sys.stderr)
        return exits.NO_DEPLOYMENT


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in _OPERATIONS:
        return _operate(args)
    if args.command == "validate":
        from spotyolo.cli.validate import run_validate

        return run_validate(args)
    if args.command == "local":
        from spotyolo.local.cli import run_local, run_serve

        return run_serve(args) if args.job_dir == "serve" else run_local(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
