"""The S3 layout (docs/ARCHITECTURE.md, "The S3 layout"): every key the pipeline reads or writes
is built here."""

from __future__ import annotations

import re

from spotyolo.contract.errors import JobInvalid

JOB_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
CONFIG_NAME = "config.yaml"
DATASET_DIR = "dataset"
DATA_YAML = "data.yaml"

BEST = "best.pt"
LAST = "last.pt"
RESULTS_CSV = "results.csv"
METRICS_JSON = "metrics.json"
#: files promoted from a successful run to weights/<job>/
WEIGHT_FILES = (BEST, LAST, RESULTS_CSV, METRICS_JSON)
#: Ultralytics' plots (results.png, the PR/F1 curves, the confusion matrix, val batch
#: predictions): uploaded among a run's artifacts, promoted to weights/<job>/plots/
PLOTS_DIR = "plots"
PLOT_SUFFIXES = (".png", ".jpg")


def check_job_name(job: str) -> str:
    """Return ``job`` if it is a valid job name, else raise ``JobInvalid`` saying how to fix it."""
    if not isinstance(job, str) or not JOB_NAME_RE.match(job):
        raise JobInvalid(
            f"job name {str(job)[:100]!r} is not allowed: use 1-63 characters of a-z, 0-9, '.', '_' or '-', "
            "starting with a letter or digit (e.g. 'shapes' or 'pcb-defects.v2')"
        )
    return job


def job_prefix(job: str) -> str:
    return f"jobs/{job}/"


def config_key(job: str) -> str:
    return f"jobs/{job}/{CONFIG_NAME}"


def dataset_prefix(job: str) -> str:
    return f"jobs/{job}/{DATASET_DIR}/"


def data_yaml_key(job: str) -> str:
    return f"jobs/{job}/{DATASET_DIR}/{DATA_YAML}"


def is_config_key_shape(key: str) -> bool:
    """``jobs/<one segment>/config.yaml``: the trigger's shape (the name is checked apart)."""
    parts = key.split("/")
    return len(parts) == 3 and parts[0] == "jobs" and parts[2] == CONFIG_NAME


def job_from_config_key(key: str) -> str:
    """``jobs/<job>/config.yaml`` -> ``<job>``; anything else is ``JobInvalid``."""
    if not is_config_key_shape(key):
        raise JobInvalid(f"s3 key {key[:200]!r} is not a job trigger: upload jobs/<job>/{CONFIG_NAME}")
    return check_job_name(key.split("/")[1])


def run_prefix(job: str, run_id: str) -> str:
    return f"runs/{job}/{run_id}/"


def job_json_key(job: str, run_id: str) -> str:
    return f"runs/{job}/{run_id}/job.json"


def checkpoint_key(job: str, run_id: str, name: str = LAST) -> str:
    """The run's checkpoint in S3: ``last.pt`` (what a resume starts from) or ``best.pt`` (kept
    with it, so a resumed run that never beats its best still has it)."""
    return f"runs/{job}/{run_id}/checkpoints/{name}"


def artifacts_prefix(job: str, run_id: str) -> str:
    return f"runs/{job}/{run_id}/artifacts/"


def artifact_key(job: str, run_id: str, name: str) -> str:
    return f"runs/{job}/{run_id}/artifacts/{name}"


def weights_prefix(job: str) -> str:
    return f"weights/{job}/"


def weights_key(job: str, name: str) -> str:
    return f"weights/{job}/{name}"


def previous_weights_prefix(job: str) -> str:
    return f"weights/{job}/previous/"


def is_plot(name: str) -> bool:
    """An artifact name that is one of the run's plot images (a plain file name)."""
    return "/" not in name and not name.startswith(".") and name.lower().endswith(PLOT_SUFFIXES)


def plots_prefix(job: str) -> str:
    return f"weights/{job}/{PLOTS_DIR}/"


def previous_plots_prefix(job: str) -> str:
    return f"weights/{job}/previous/{PLOTS_DIR}/"
