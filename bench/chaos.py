"""The fault campaign: N seeds of a tiny job through the local engine, each under its own
fault schedule (spotyolo/local/chaos.py), each checked against the guarantees
(spotyolo/local/campaign.py). Writes the results table into bench/README.md.

    .venv/bin/python bench/chaos.py [--seeds 200] [--first 1] [--write bench/README.md]
    .venv/bin/python bench/chaos.py --queue [--jobs 3] [--seeds 20] [--write bench/README.md]

(``make chaos N=200``.) Each seed is one ``spotyolo local JOB --chaos SEED`` run. With
``--queue``, each seed is one ``spotyolo local JOB --chaos SEED --jobs 3`` run: three copies of
the tiny job through the instance-slot queue of an account whose quota allows one instance
(spotyolo/local/queuecampaign.py); its table goes between the queue-chaos markers.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- chaos:begin -->", "<!-- chaos:end -->"
QUEUE_BEGIN, QUEUE_END = "<!-- queue-chaos:begin -->", "<!-- queue-chaos:end -->"
#: the shortened sample job: YOLO11n from scratch, 16/8 images of 64 px, 2 epochs
CONFIG = (
    "model: yolo11n.yaml\nepochs: 2\nimgsz: 64\nbatch: 8\nworkers: 0\nplots: false\n"
    "instance_type: g5.xlarge\ncapacity: spot\nmax_interruptions: 3\nstall_hours: 0.05\n"
    "max_hours: 1\nmax_cost_usd: 5\ntarget: {metric: recall, min: 0.0}\n"
)


def tiny_job(folder: Path, name: str = "chaos-tiny") -> Path:
    spec = importlib.util.spec_from_file_location("generate_shapes", ROOT / "examples" / "generate_shapes.py")
    assert spec and spec.loader
    shapes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shapes)
    job = folder / name
    shapes.generate(job / "dataset", train=16, val=8, size=64, seed=1)
    (job / "config.yaml").write_text(CONFIG)
    return job


def table(results: list[dict[str, Any]], seconds: float) -> str:
    planned: Counter[str] = Counter()
    fired: Counter[str] = Counter()
    broken: Counter[str] = Counter()
    outcomes: Counter[str] = Counter(r["outcome"] for r in results)
    for r in results:
        for f in r["faults"]:
            planned[f["kind"]] += 1
            fired[f["kind"]] += f["fired"]
        for v in r["violations"]:
            broken[v.split(":", 1)[0]] += 1
    lines = [
        f"{len(results)} seeds ({results[0]['seed']}..{results[-1]['seed']}) in {seconds / 60:.1f} min; "
        f"outcomes: {', '.join(f'{k} {v}' for k, v in sorted(outcomes.items()))}; "
        f"seeds with a violation: {sum(1 for r in results if r['violations'])}",
        "",
        "| fault kind | planned | fired |",
        "|---|---|---|",
        *[f"| {k} | {planned[k]} | {fired[k]} |" for k in sorted(planned)],
        "",
        "| invariant broken | seeds |",
        "|---|---|",
        *([f"| {k} | {v} |" for k, v in sorted(broken.items())] or ["| (none) | 0 |"]),
        "",
        "| seed | faults fired (where) | outcome | violations | s |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        faults = "; ".join(f"{f['kind']} @ {f['where']}" for f in r["faults"] if f["fired"]) or "none fired"
        violations = "<br>".join(r["violations"]) or "-"
        lines.append(f"| {r['seed']} | {faults} | {r['outcome']} | {violations} | {r['seconds']} |")
    return "\n".join(lines)


def queue_table(results: list[dict[str, Any]], seconds: float) -> str:
    """The queue campaign's table: as ``table``, with each seed's deployment and how many
    instances ran at once at most; outcomes counted per job."""
    planned: Counter[str] = Counter()
    fired: Counter[str] = Counter()
    broken: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    for r in results:
        for part in r["outcome"].split(", "):
            status, _, count = part.rpartition(" ")
            outcomes[status] += int(count)
        for f in r["faults"]:
            planned[f["kind"]] += 1
            fired[f["kind"]] += f["fired"]
        for v in r["violations"]:
            broken[v.split(":", 1)[0]] += 1
    jobs = len(results[0]["jobs"])
    ends = ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
    lines = [
        f"{len(results)} seeds ({results[0]['seed']}..{results[-1]['seed']}) of {jobs} jobs each in "
        f"{seconds / 60:.1f} min; jobs' outcomes: {ends}; "
        f"seeds with a violation: {sum(1 for r in results if r['violations'])}",
        "",
        "| fault kind | planned | fired |",
        "|---|---|---|",
        *[f"| {k} | {planned[k]} | {fired[k]} |" for k in sorted(planned)],
        "",
        "| invariant broken | violations |",
        "|---|---|",
        *([f"| {k} | {v} |" for k, v in sorted(broken.items())] or ["| (none) | 0 |"]),
        "",
        "| seed | quota / max_instances, upload | faults fired (where) | jobs' outcomes | most instances "
        "at once | violations | s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        faults = "; ".join(f"{f['kind']} @ {f['where']}" for f in r["faults"] if f["fired"]) or "none fired"
        violations = "<br>".join(r["violations"]) or "-"
        deployment = f"{r['quota']} / {r['max_instances']}, {r['uploaded']}"
        lines.append(
            f"| {r['seed']} | {deployment} | {faults} | {r['outcome']} | {r['most_instances']} "
            f"| {violations} | {r['seconds']} |"
        )
    return "\n".join(lines)


def write(readme: Path, text: str, begin: str = BEGIN, end: str = END) -> None:
    content = readme.read_text()
    block = f"{begin}\n{text}\n{end}"
    if begin in content and end in content:
        head, rest = content.split(begin, 1)
        content = head + block + rest.split(end, 1)[1]
    else:
        content = content.rstrip() + "\n\n" + block + "\n"
    readme.write_text(content)


def combine(args: argparse.Namespace) -> int:
    """The table of campaigns run side by side (``--first``/``--seeds`` ranges in separate
    processes, each with ``--jsonl``), in seed order."""
    results = sorted(
        (json.loads(line) for name in args.from_jsonl for line in Path(name).read_text().splitlines()),
        key=lambda r: int(r["seed"]),
    )
    seconds = 60 * args.wall_minutes if args.wall_minutes else sum(float(r["seconds"]) for r in results)
    text = queue_table(results, seconds) if args.queue else table(results, seconds)
    print(text)
    if args.write:
        write(Path(args.write), text, *((QUEUE_BEGIN, QUEUE_END) if args.queue else (BEGIN, END)))
    return 1 if any(r["violations"] for r in results) else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first", type=int, default=1)
    parser.add_argument("--write", help="the README to write the table into (between the chaos markers)")
    parser.add_argument("--jsonl", help="also append each seed's summary to this file")
    parser.add_argument("--queue", action="store_true", help="the queue campaign: --jobs jobs per seed")
    parser.add_argument("--jobs", type=int, default=3, help="with --queue: jobs per seed")
    parser.add_argument(
        "--from-jsonl",
        nargs="+",
        metavar="FILE",
        help="run nothing: the table of seeds already run (--jsonl files of campaigns run side by side)",
    )
    parser.add_argument("--wall-minutes", type=float, help="with --from-jsonl: the campaigns' wall time")
    args = parser.parse_args()
    if args.from_jsonl:
        return combine(args)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(ROOT / ".yolo"))
    from spotyolo.local.campaign import run_seed
    from spotyolo.local.queuecampaign import run_queue_seed
    from spotyolo.trainer.offline import prepare_ultralytics

    prepare_ultralytics(os.environ["YOLO_CONFIG_DIR"])
    results = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="spotyolo-chaos-job-") as tmp:
        job = tiny_job(Path(tmp))
        for seed in range(args.first, args.first + args.seeds):
            result = run_queue_seed(job, seed, jobs=args.jobs) if args.queue else run_seed(job, seed)
            results.append(result)
            print(
                f"seed {seed}: {result['outcome']} {result['seconds']} s, "
                f"{sum(f['fired'] for f in result['faults'])} fault(s) fired, "
                f"violations: {result['violations'] or 'none'}",
                flush=True,
            )
            if args.jsonl:
                with open(args.jsonl, "a") as out:
                    out.write(json.dumps(result, default=str) + "\n")
    seconds = time.monotonic() - started
    text = queue_table(results, seconds) if args.queue else table(results, seconds)
    print(text)
    if args.write:
        write(Path(args.write), text, *((QUEUE_BEGIN, QUEUE_END) if args.queue else (BEGIN, END)))
    return 1 if any(r["violations"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
