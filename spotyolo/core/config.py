"""Parsing and checking a job's ``config.yaml`` before anything is spent.

The valid training keys are those of Ultralytics' own ``cfg/default.yaml`` (copied into
``spotyolo/core/data``) and their types and ranges follow Ultralytics' argument checks
(``CFG_FLOAT_KEYS``, ``CFG_FRACTION_KEYS``, ``CFG_INT_KEYS``, ``CFG_BOOL_KEYS``, copied into
``spotyolo/core/data/ultralytics_rules.json``): Ultralytics would refuse the same values, but only
on the instance, after the money is spent. Keys that make no sense for a detection training
job in this pipeline (another mode or task, a dataset path, resume, output folders, predict
and export settings) are refused with the reason. Every problem names the file, line and
column; all of them are reported together in one ``JobInvalid``.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any, get_args

from pydantic import ValidationError

from spotyolo.contract.layout import CONFIG_NAME
from spotyolo.core.dataset import Entry, Source, bounded_listing, inspect_dataset, rules
from spotyolo.core.models import CapacityPlan, DatasetSummary, JobConfig, MetricName
from spotyolo.core.yamlsafe import Problem, ProblemList, YamlRefused, load_mapping, problems_error, shown

MAX_CONFIG_BYTES = 64 * 1024
#: Step Functions standard executions last at most a year
MAX_HOURS_LIMIT = 365 * 24
INSTANCE_TYPE_RE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9-]+$")
OPTIMIZERS = ("SGD", "MuSGD", "Adam", "Adamax", "AdamW", "NAdam", "RAdam", "RMSProp", "auto")

#: upper bounds of values that could only fail (or never end) on the instance, with the reason.
#: The GPUs on offer: T4 16 GB (g4dn), A10G / L4 24 GB (g5, g6), L40S 48 GB (g6e), A100 40/80 GB
#: (p4d/p4de), H100 80 GB (p5).
MAX_IMGSZ = 4096
_IMGSZ_REASON = (
    "Ultralytics trains square images of imgsz pixels; at 4096 one image already takes 41 times the "
    "memory of one at 640, which a batch of 1 of the larger models fills on an 80 GB GPU"
)
#: images of 640x640 per batch that the largest GPU on offer (80 GB) holds: YOLO11n takes ~2.5 GB
#: for a batch of 16 at 640 (Ultralytics' AutoBatch measures ~0.15 GB an image), so ~500 fit
MAX_BATCH_AT_640 = 512
MAX_BATCH = 4096
INT_MAX: dict[str, tuple[int, str]] = {
    "epochs": (
        10_000,
        "COCO from scratch is 600 epochs; max_hours ends a run anyway: train longer with a new job",
    ),
    "workers": (192, "the largest GPU instance on offer (p5.48xlarge) has 192 vCPUs"),
}
#: any other whole number: beyond this it is not a setting but a typo (and a C int overflows)
INT_LIMIT = 2**31 - 1

PIPELINE_KEYS: tuple[str, ...] = JobConfig.PIPELINE_KEYS
_DATASET_REASON = "the dataset is the job's dataset/ folder (dataset/data.yaml): remove it"
_OUTPUT_REASON = "the pipeline decides where a run's outputs go (runs/<job>/<run_id>/): remove it"
_PREDICT_REASON = "is a predict/export setting and has no effect on training: remove it"

#: keys refused for a detection training job run by this pipeline, with the reason
REFUSED: dict[str, str] = {
    "data": _DATASET_REASON,
    "source": "is a predict setting; " + _DATASET_REASON,
    "resume": "the pipeline resumes interrupted runs from their checkpoint itself: remove it",
    "project": _OUTPUT_REASON,
    "name": _OUTPUT_REASON,
    "save_dir": _OUTPUT_REASON,
    "device": "the trainer uses the instance's GPU (the CPU when run locally): remove it",
    "cfg": "put the settings into config.yaml itself: remove it",
    **{
        key: _PREDICT_REASON
        for key in (
            "vid_stride",
            "stream_buffer",
            "visualize",
            "augment",
            "agnostic_nms",
            "retina_masks",
            "embed",
            "show",
            "save_frames",
            "save_txt",
            "save_conf",
            "save_crop",
            "show_labels",
            "show_conf",
            "show_boxes",
            "line_width",
            "format",
            "optimize",
            "dynamic",
            "simplify",
            "opset",
            "workspace",
            "tracker",
            "dnn",
            "nms",
        )
    },
}


@cache
def default_cfg() -> dict[str, Any]:
    """Ultralytics' default.yaml (the copy): every training key and its default."""
    path = Path(__file__).parent / "data" / "ultralytics_default.yaml"
    return dict(load_mapping(path.read_bytes(), str(path), max_bytes=1024 * 1024).values)


def valid_keys() -> list[str]:
    return sorted({*default_cfg(), *PIPELINE_KEYS} - set(REFUSED))


Locate = Callable[[str], tuple[str, int | None, int | None]]


class _Checker:
    """Collects problems for one config; ``locate(key)`` says where a key was written."""

    def __init__(self, locate: Locate, file_exists: Callable[[str], bool] | None) -> None:
        self.locate = locate
        self.file_exists = file_exists
        self.problems: list[Problem] = []

    def add(self, key: str, message: str) -> None:
        where, line, column = self.locate(key)
        self.problems.append(Problem(where, message, line, column))

    # ------------------------------------------------------------------ value checks

    def number(self, key: str, value: Any, *, integer: bool = False) -> float | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            kind = "an integer" if integer else "a number"
            self.add(key, f"{key}: {shown(value)} must be {kind} (e.g. {key}: {default_cfg().get(key) or 1})")
            return None
        if not math.isfinite(value):
            self.add(key, f"{key}: {shown(value)} must be a finite number")
            return None
        if integer and not float(value).is_integer():
            self.add(key, f"{key}: {shown(value)} must be a whole number")
            return None
        return float(value)

    def model_file(self, key: str, value: Any, *, required: bool) -> None:
        """A model Ultralytics can fetch (``.pt`` pretrained / ``.yaml`` from scratch) or a job file."""
        if value is None and not required:
            return
        if not isinstance(value, str) or not value.strip():
            self.add(key, f"{key}: must name a model, e.g. '{key}: yolo11n.pt' (pretrained) or yolo11n.yaml")
            return
        name = value.strip()
        suffix = Path(name).suffix.lower()
        if suffix not in (".pt", ".yaml", ".yml"):
            self.add(
                key,
                f"{key}: {shown(name)} is not a model training can start from: use a .pt (pretrained "
                "weights, e.g. yolo11n.pt) or a .yaml (architecture, from scratch, e.g. yolo11n.yaml)",
            )
            return
        known = rules()["pretrained_models"] if suffix == ".pt" else rules()["scratch_models"]
        if name in known:
            return
        local = name.replace("\\", "/")
        outside = local.startswith("/") or ".." in local.split("/")
        if not outside and self.file_exists is not None and self.file_exists(local):
            return
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        examples = (
            "yolo11n.pt, yolo11s.pt, yolo11m.pt, yolo26n.pt"
            if suffix == ".pt"
            else "yolo11n.yaml, yolov8s.yaml"
        )
        where = "a file in the job folder" if not outside else "a path inside the job folder"
        self.add(
            key,
            f"{key}: {shown(name)} is neither a detection model Ultralytics can download "
            f"({examples}, ...){hint} nor {where} (put the file next to config.yaml and write its name)",
        )

    def train_key(self, key: str, value: Any, out: dict[str, Any]) -> None:
        """Ultralytics' own type and range rules (``ultralytics.cfg.check_cfg``), before spend."""
        if value is None:
            if _needs_value(key):
                default = default_cfg().get(key)
                self.add(
                    key,
                    f"{key}: must have a value (default {shown(default)}); "
                    "remove the line to use the default",
                )
            return
        train_rules().get(key, _by_default_type)(self, key, value, out)

    def pipeline_key(self, key: str, value: Any, values: Mapping[str, Any]) -> None:
        rule = PIPELINE_RULES.get(key)
        if rule is not None:
            rule(self, key, value, values)


# --------------------------------------------------------------------- training keys
# A rule gets the checker, the key, its (non-null) value and the arguments handed to the
# trainer (``out``), where it stores a normalised value (an integral float as an int).

TrainRule = Callable[[_Checker, str, Any, dict[str, Any]], None]


def _needs_value(key: str) -> bool:
    """A null would reach Ultralytics as None where it expects a typed value."""
    r = rules()
    typed = {*r["float_keys"], *r["fraction_keys"], *r["int_keys"], *r["bool_keys"], *r["str_keys"]}
    default = default_cfg().get(key)
    return key == "amp" or (default is not None and (key in typed or key in ("scale", "compile")))


def _batch(c: _Checker, key: str, value: Any, out: dict[str, Any]) -> None:
    n = c.number(key, value)
    if n is None:
        return
    if not (n == -1 or (n >= 1 and n.is_integer()) or 0 < n < 1):
        c.add(
            key,
            f"batch: {shown(value)} is not a batch size: use a whole number >= 1 (e.g. 16), -1 for "
            "AutoBatch, or a fraction in (0, 1) of GPU memory",
        )
        return
    if n < 1:
        return
    imgsz = _largest_side(out.get("imgsz", default_cfg().get("imgsz", 640)))
    fits = max(1, int(MAX_BATCH_AT_640 * (640 / imgsz) ** 2)) if imgsz else MAX_BATCH
    limit = min(MAX_BATCH, fits)
    if n > limit:
        c.add(
            key,
            f"batch: {shown(value)} is more than {limit} images of {imgsz or 640} px, which no GPU on offer "
            f"holds (about {MAX_BATCH_AT_640} of 640 px fit in 80 GB, fewer as imgsz grows): "
            "lower batch, or use batch: -1 (AutoBatch picks what the GPU holds)",
        )
        return
    out[key] = int(n)


def _largest_side(value: Any) -> int | None:
    """The larger side of an imgsz that passed (or will fail) its own rule; None if not a size."""
    sizes = value if isinstance(value, list) else [value]
    numbers = [
        s for s in sizes if isinstance(s, int | float) and not isinstance(s, bool) and math.isfinite(s)
    ]
    return int(max(numbers)) if numbers and max(numbers) >= 32 else None


def _imgsz(c: _Checker, key: str, value: Any, out: dict[str, Any]) -> None:
    sizes = value if isinstance(value, list) else [value]
    if not 1 <= len(sizes) <= 2 or any(
        isinstance(s, bool)
        or not isinstance(s, int | float)
        or not math.isfinite(s)
        or s < 32
        or not float(s).is_integer()
        for s in sizes
    ):
        c.add(key, f"imgsz: {shown(value)} must be a whole number of pixels >= 32 (e.g. imgsz: 640)")
    elif max(sizes) > MAX_IMGSZ:
        c.add(key, f"imgsz: {shown(value)} is larger than {MAX_IMGSZ}: {_IMGSZ_REASON}")


def _time(c: _Checker, key: str, value: Any, out: dict[str, Any]) -> None:
    n = c.number(key, value)
    if n is not None and n <= 0:
        c.add(key, "time: the training time limit in hours must be > 0 (or remove it)")
    elif n is not None and n > MAX_HOURS_LIMIT:
        c.add(
            key,
            f"time: {shown(value)} is more than {MAX_HOURS_LIMIT} hours (a Step Functions execution's limit)",
        )


def _float(c: _Checker, key: str, value: Any, out: dict[str, Any]) -> None:
    c.number(key, value)


def _scale(c: _Checker, key: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, list):
        if len(value) != 2 or any(isinstance(x, bool) or not isinstance(x, int | float) for x in value):
            c.add(key, f"scale: {shown(value)} must be a number in [0, 1] or a pair [min, max]")
        return
    n = c.number(key, value)
    if n is not None and not 0.0 <= n <= 1.0:
        c.add(key, f"scale: {shown(value)} is out of range: allowed 0.0 to 1.0")


def _fraction(c: _Checker, key: str, value: Any, out: dict[str, Any]) -> None:
    """A ratio or count of images, or a split list (Ultralytics accepts both)."""
    if isinstance(value, list):
        ok = len(value) in (2, 3) and all(value[:2])
        ok = ok and all((type(x) is int and x >= 0) or (type(x) is float and 0.0 <= x <= 1.0) for x in value)
        if not ok:
            c.add(key, f"fraction: {shown(value)}: use [train, val] or [train, val, test] counts or ratios")
        return
    n = c.number(key, value)
    if n is not None and not (0.0 < n <= 1.0 or (isinstance(value, int) and value > 1)):
        c.add(key, f"fraction: {shown(value)}: use a ratio in (0, 1] or a whole count > 1 of images")


def _fraction_key(c: _Checker, key: str, value: Any, out: dict[str, Any]) -> None:
    n = c.number(key, value)
    if n is not None and not 0.0 <= n <= 1.0:
        default = default_cfg().get(key)
        c.add(key, f"{key}: {shown(value)} is out of range: allowed 0.0 to 1.0 (default {shown(default)})")


def _int(c: _Checker, key: str, value: Any, out: dict[str, Any]) -> None:
    n = c.number(key, value, integer=True)
    if n is None:
        return
    minimum = rules()["int_min"].get(key)
    if minimum is not None and n < minimum:
        c.add(key, f"{key}: {shown(value)} is too small: it must be >= {minimum}")
        return
    maximum, reason = INT_MAX.get(key, (INT_LIMIT, "no setting needs a larger number"))
    if n > maximum:
        c.add(key, f"{key}: {shown(value)} is more than {maximum}: {reason}")
        return
    out[key] = int(n)


def _bool(c: _Checker, key: str, value: Any, out: dict[str, Any]) -> None:
    if not isinstance(value, bool):
        c.add(key, f"{key}: {shown(value)} must be true or false")
    elif key == "save" and value is False:
        c.add(key, "save: false would keep no checkpoints, which the pipeline needs: remove it")


def _optimizer(c: _Checker, key: str, value: Any, out: dict[str, Any]) -> None:
    names = {o.lower() for o in OPTIMIZERS}
    if not isinstance(value, str) or value.lower() not in names:
        c.add(key, f"optimizer: {shown(value)} is not one of {', '.join(OPTIMIZERS)}")


def _text(c: _Checker, key: str, value: Any, out: dict[str, Any]) -> None:
    if not isinstance(value, str):
        c.add(key, f"{key}: {shown(value)} must be text (default {shown(default_cfg().get(key))})")


def _compile(c: _Checker, key: str, value: Any, out: dict[str, Any]) -> None:
    if not isinstance(value, bool | str):
        c.add(key, f"compile: {shown(value)} must be true, false or a torch.compile mode name")


def _amp(c: _Checker, key: str, value: Any, out: dict[str, Any]) -> None:
    if not isinstance(value, bool) and str(value).lower() not in {"fp16", "bf16", "fp32"}:
        c.add(key, f"amp: {shown(value)}: allowed true, false, 'fp16', 'bf16' or 'fp32'")


def _quantize(c: _Checker, key: str, value: Any, out: dict[str, Any]) -> None:
    allowed = rules()["quantize_values"]
    if str(value).lower() not in {v.lower() for v in allowed}:
        c.add(key, f"quantize: {shown(value)}: allowed {', '.join(allowed)} (or remove it)")


def _cache(c: _Checker, key: str, value: Any, out: dict[str, Any]) -> None:
    if not (isinstance(value, bool) or value in ("ram", "disk")):
        c.add(key, f"cache: {shown(value)}: allowed true, false, 'ram' or 'disk'")


def _pretrained(c: _Checker, key: str, value: Any, out: dict[str, Any]) -> None:
    """``pretrained: true/false`` toggles the model's own weights; otherwise it names weights."""
    if not isinstance(value, bool):
        c.model_file(key, value, required=False)


def _distill_model(c: _Checker, key: str, value: Any, out: dict[str, Any]) -> None:
    c.model_file(key, value, required=False)


def _mode(c: _Checker, key: str, value: Any, out: dict[str, Any]) -> None:
    if value != "train":
        c.add(key, f"mode: {shown(value)}: a job trains; only 'mode: train' is accepted (or remove it)")


def _task(c: _Checker, key: str, value: Any, out: dict[str, Any]) -> None:
    if value != "detect":
        c.add(
            key,
            f"task: {shown(value)}: this pipeline trains detection models; use 'task: detect' or remove it",
        )


def _classes(c: _Checker, key: str, value: Any, out: dict[str, Any]) -> None:
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in items):
        c.add(key, f"classes: {shown(value)} must be a class id or a list of class ids (e.g. [0, 2])")


def _freeze(c: _Checker, key: str, value: Any, out: dict[str, Any]) -> None:
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(x, int | str) and not isinstance(x, bool) for x in items):
        c.add(key, f"freeze: {shown(value)} must be a number of layers or a list of layer indices/names")


def _by_default_type(c: _Checker, key: str, value: Any, out: dict[str, Any]) -> None:
    """A key without a rule keeps its default's type where it has one."""
    default = default_cfg().get(key)
    if isinstance(default, bool) and not isinstance(value, bool):
        c.add(key, f"{key}: {shown(value)} must be true or false")
    elif isinstance(default, str) and not isinstance(value, str):
        c.add(key, f"{key}: {shown(value)} must be text (default {shown(default)})")


@cache
def train_rules() -> dict[str, TrainRule]:
    """Each training key's rule. Earlier rows win: a named rule (batch, time, fraction,
    optimizer) beats the Ultralytics type group that also lists the key."""
    r = rules()
    rows: list[tuple[Iterable[str], TrainRule]] = [
        (["batch"], _batch),
        (["imgsz"], _imgsz),
        (["time"], _time),
        (r["float_keys"], _float),
        (["scale"], _scale),
        (["fraction"], _fraction),
        (r["fraction_keys"], _fraction_key),
        (r["int_keys"], _int),
        (r["bool_keys"], _bool),
        (["optimizer"], _optimizer),
        (r["str_keys"], _text),
        (["compile"], _compile),
        (["amp"], _amp),
        (["quantize"], _quantize),
        (["cache"], _cache),
        (["pretrained"], _pretrained),
        (["distill_model"], _distill_model),
        (["mode"], _mode),
        (["task"], _task),
        (["classes"], _classes),
        (["freeze"], _freeze),
    ]
    table: dict[str, TrainRule] = {}
    for keys, rule in rows:
        for key in keys:
            table.setdefault(key, rule)
    return table


# --------------------------------------------------------------------- pipeline keys
# A rule gets the checker, the key, its value and the whole config (rules that compare keys).

PipelineRule = Callable[[_Checker, str, Any, Mapping[str, Any]], None]


def _instance_type(c: _Checker, key: str, value: Any, values: Mapping[str, Any]) -> None:
    if not isinstance(value, str) or not INSTANCE_TYPE_RE.match(value):
        c.add(key, f"instance_type: {shown(value)} is not an EC2 instance type (e.g. g5.xlarge)")


def _instance_types(c: _Checker, key: str, value: Any, values: Mapping[str, Any]) -> None:
    if not isinstance(value, list) or not value:
        c.add(key, "instance_types: must be a list of EC2 instance types, e.g. [g5.xlarge, g6.xlarge]")
        return
    bad = [v for v in value if not isinstance(v, str) or not INSTANCE_TYPE_RE.match(v)]
    if bad:
        c.add(key, f"instance_types: {shown(bad[0])} is not an EC2 instance type (e.g. g5.xlarge)")
    elif len(set(value)) != len(value):
        c.add(key, "instance_types: lists a type twice: keep each once")


def _capacity(c: _Checker, key: str, value: Any, values: Mapping[str, Any]) -> None:
    allowed = get_args(CapacityPlan)
    if value not in allowed:
        c.add(key, f"capacity: {shown(value)}: allowed {', '.join(allowed)}")


def _max_interruptions(c: _Checker, key: str, value: Any, values: Mapping[str, Any]) -> None:
    n = c.number(key, value, integer=True)
    if n is not None and n < 0:
        c.add(key, "max_interruptions: must be 0 or more")


def _hours(c: _Checker, key: str, value: Any) -> float | None:
    """The hours, when they are a number a Step Functions execution can wait (else None)."""
    n = c.number(key, value)
    if n is None:
        return None
    if n <= 0:
        c.add(key, f"{key}: must be more than 0 hours")
        return None
    if n > MAX_HOURS_LIMIT:
        c.add(
            key, f"{key}: {shown(value)} is over {MAX_HOURS_LIMIT} hours (a Step Functions execution's limit)"
        )
        return None
    return n


def _max_hours(c: _Checker, key: str, value: Any, values: Mapping[str, Any]) -> None:
    _hours(c, key, value)


def _stall_hours(c: _Checker, key: str, value: Any, values: Mapping[str, Any]) -> None:
    n = _hours(c, key, value)
    if n is None:
        return
    limit = values.get("max_hours")
    if n * 3600 < 1:
        c.add(key, "stall_hours: must be at least one second (0.0003 hours)")
    elif isinstance(limit, int | float) and n > float(limit):
        c.add(key, f"stall_hours: {shown(value)} is longer than max_hours ({limit})")


def _max_cost_usd(c: _Checker, key: str, value: Any, values: Mapping[str, Any]) -> None:
    if value is None:
        return
    n = c.number(key, value)
    if n is not None and n <= 0:
        c.add(key, "max_cost_usd: must be more than 0 (or remove it for no budget)")


def _target(c: _Checker, key: str, value: Any, values: Mapping[str, Any]) -> None:
    """``target: {metric, min}``; each part is reported where it was written."""
    metrics = get_args(MetricName)
    if value is None:
        return
    if not isinstance(value, dict):
        c.add(
            key,
            "target: must be a mapping, e.g. target: {metric: recall, min: 0.8}; "
            f"allowed metrics {', '.join(metrics)}",
        )
        return
    for sub in value:
        if sub not in ("metric", "min"):
            close = difflib.get_close_matches(str(sub), ["metric", "min"], n=1)
            hint = f" (did you mean {shown(close[0])}?)" if close else ""
            c.add(f"target.{sub}", f"target: unknown key {shown(sub)}{hint}; target has metric and min")
    if value.get("metric") not in metrics:
        c.add("target.metric", f"target.metric: {shown(value.get('metric'))}: allowed {', '.join(metrics)}")
    threshold = value.get("min")
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
        c.add("target.min", f"target.min: {shown(threshold)} must be a number from 0 to 1 (e.g. 0.8)")


#: checkpoint_minutes' bounds: under a minute the uploads are mostly overhead; over a day the
#: insurance is void (a Step Functions execution runs a year, an attempt rarely a day)
CHECKPOINT_MINUTES_RANGE = (1.0, 1440.0)


def _checkpoint_minutes(c: _Checker, key: str, value: Any, values: Mapping[str, Any]) -> None:
    n = c.number(key, value)
    low, high = CHECKPOINT_MINUTES_RANGE
    if n is not None and not low <= n <= high:
        c.add(
            key,
            f"checkpoint_minutes: {value!r} must be from {low:g} to {high:g} minutes (default 10): the "
            "period of the insurance upload of the checkpoint, what an instance lost without a notice "
            "can cost at most",
        )


PIPELINE_RULES: dict[str, PipelineRule] = {
    "instance_type": _instance_type,
    "instance_types": _instance_types,
    "capacity": _capacity,
    "max_interruptions": _max_interruptions,
    "stall_hours": _stall_hours,
    "max_hours": _max_hours,
    "max_cost_usd": _max_cost_usd,
    "target": _target,
    "checkpoint_minutes": _checkpoint_minutes,
}


def check_values(
    values: Mapping[str, Any], locate: Locate, file_exists: Callable[[str], bool] | None = None
) -> tuple[JobConfig | None, list[Problem]]:
    """Check a flat config mapping; return the model (when there are no problems) and the problems."""
    checker = _Checker(locate, file_exists)
    out = dict(values)
    defaults = default_cfg()
    valid = valid_keys()
    for key, value in values.items():
        if key in REFUSED:
            checker.add(key, f"{key}: {REFUSED[key]}")
            out.pop(key, None)
        elif key == "model":
            checker.model_file(key, value, required=True)
        elif key in PIPELINE_KEYS:
            checker.pipeline_key(key, value, values)
        elif key in defaults:
            checker.train_key(key, value, out)
        else:
            close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
            hint = f"; did you mean {shown(close[0])}?" if close else ""
            checker.add(
                key,
                f"unknown key {shown(key)}{hint} (valid keys: Ultralytics train arguments and "
                f"{', '.join(PIPELINE_KEYS)})",
            )
            out.pop(key, None)
    if "model" not in values:
        checker.add(
            "model", "model: missing: add e.g. 'model: yolo11n.pt' (pretrained) or 'model: yolo11n.yaml'"
        )
    if values.get("instance_type") is not None and values.get("instance_types") is not None:
        checker.add("instance_types", "set instance_type or instance_types, not both")
    for key in ("mode", "task"):
        out.pop(key, None)  # checked; the trainer always trains detection
    if checker.problems:
        return None, checker.problems
    try:
        return JobConfig.model_validate(out), []
    except ValidationError as err:  # a rule above missed something: still report it cleanly
        for item in err.errors():
            key = str(item["loc"][0]) if item["loc"] else "model"
            checker.add(key, f"{'.'.join(str(x) for x in item['loc'])}: {item['msg']}")
        return None, checker.problems


def inspect_config(
    text: bytes | str,
    filename: str = CONFIG_NAME,
    *,
    overrides: Mapping[str, Any] | None = None,
    file_exists: Callable[[str], bool] | None = None,
) -> tuple[JobConfig | None, list[Problem]]:
    """Parse and check config.yaml text (``filename`` names it in messages), then ``overrides``.

    ``file_exists(path)`` answers whether a path relative to the job folder exists (a model
    file next to config.yaml). Returns the config (None when there are problems) and the problems.
    """
    try:
        parsed = load_mapping(text, filename, max_bytes=MAX_CONFIG_BYTES)
    except YamlRefused as err:
        return None, [err.problem]
    values = dict(parsed.values)
    from_overrides: set[str] = set()
    if overrides:
        for key, value in overrides.items():
            values[key] = value
            from_overrides.add(key)
        # an override of one of the pair replaces the other
        for one, other in (("instance_type", "instance_types"), ("instance_types", "instance_type")):
            if one in from_overrides and other not in from_overrides:
                values.pop(other, None)

    def locate(key: str) -> tuple[str, int | None, int | None]:
        top, _, sub = key.partition(".")
        if top in from_overrides:
            return "overrides", None, None
        mark = parsed.sub_marks.get((top, sub)) if sub else None
        mark = mark or parsed.marks.get(top) or parsed.value_marks.get(top)
        return (filename, *mark) if mark else (filename, None, None)

    config, problems = check_values(values, locate, file_exists)
    ordered = sorted(
        [*parsed.problems, *problems],
        key=lambda p: (p.where == "overrides", p.line or 0, p.column or 0),
    )
    return config, ordered


def parse_config(
    text: bytes | str,
    filename: str = CONFIG_NAME,
    *,
    overrides: Mapping[str, Any] | None = None,
    file_exists: Callable[[str], bool] | None = None,
) -> JobConfig:
    """:func:`inspect_config`, raising one ``JobInvalid`` (first 20 problems and the total)."""
    config, problems = inspect_config(text, filename, overrides=overrides, file_exists=file_exists)
    if problems or config is None:
        raise problems_error(problems, filename)
    return config


def inspect_job(
    source: Source,
    *,
    entries: Iterable[Entry] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[JobConfig | None, DatasetSummary, list[Problem]]:
    """Check a whole job folder (config.yaml + dataset/) on S3 or locally: the same checks, messages.

    ``entries`` is the source's listing when the caller already has it (it is needed once for
    both the dataset and a model file named in config.yaml).
    """
    problems = ProblemList()
    if entries is None:
        entries, too_many = bounded_listing(source)
        if too_many:
            return None, DatasetSummary(), ProblemList([too_many])
    listing = list(entries)
    paths = {e.path for e in listing}
    config: JobConfig | None = None
    config_where = source.where(CONFIG_NAME)
    config_size = next((e.size for e in listing if e.path == CONFIG_NAME), 0)
    if config_size > MAX_CONFIG_BYTES:  # refused from the listing: never read
        problems.append(
            Problem(
                config_where,
                f"file is {config_size} bytes; the limit is {MAX_CONFIG_BYTES} bytes: "
                "is this the right file?",
            )
        )
    elif CONFIG_NAME in paths:
        config, config_problems = inspect_config(
            source.read(CONFIG_NAME), config_where, overrides=overrides, file_exists=paths.__contains__
        )
        problems.extend(config_problems)
    else:
        problems.append(
            Problem(
                config_where, "missing: a job needs config.yaml next to dataset/ (e.g. 'model: yolo11n.pt')"
            )
        )
    summary, dataset_problems = inspect_dataset(source, entries=listing)
    problems.extend(dataset_problems)
    classes = getattr(config, "classes", None) if config else None
    if classes is not None and summary.names:
        wanted = classes if isinstance(classes, list) else [classes]
        outside = [c for c in wanted if isinstance(c, int) and c >= len(summary.names)]
        if outside:
            where, line, column = (config_where, None, None)
            problems.append(
                Problem(
                    where,
                    f"classes: {outside[0]} is not a class of this dataset (ids 0-{len(summary.names) - 1})",
                    line,
                    column,
                )
            )
    return (config if not problems else None), summary, problems


def check_job(
    source: Source,
    *,
    entries: Iterable[Entry] | None = None,
    overrides: Mapping[str, Any] | None = None,
    subject: str = "the job",
) -> tuple[JobConfig, DatasetSummary]:
    """:func:`inspect_job`, raising one ``JobInvalid`` with the first 20 problems and the total."""
    config, summary, problems = inspect_job(source, entries=entries, overrides=overrides)
    if problems or config is None:
        raise problems_error(problems, subject)
    return config, summary
