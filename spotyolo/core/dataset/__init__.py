"""The job's dataset: resolving its data.yaml and checking it before any spend.

* :mod:`.sources` — where files come from: :class:`LocalSource`, :class:`S3Source` (every S3 call).
* :mod:`.spec` — what a data.yaml means (:func:`resolve_data_yaml`), and
  :func:`write_local_data_yaml` for the trainer (absolute paths Ultralytics reads as is).
* :mod:`.labels` — one YOLO label file (:func:`check_label_text`).
* :mod:`.inspection` — the whole check (:func:`inspect_dataset`): a ``DatasetSummary`` plus the
  problems found, the same over S3 and a local folder.
* :mod:`.formats`, :mod:`.paths` — Ultralytics' image formats and label paths; job-relative paths.
"""

from __future__ import annotations

from spotyolo.contract.errors import JobInvalid
from spotyolo.core.dataset.formats import label_path, rules
from spotyolo.core.dataset.inspection import MAX_WORKERS, bounded_listing, check_dataset, inspect_dataset
from spotyolo.core.dataset.labels import check_label_text
from spotyolo.core.dataset.sources import Entry, LocalSource, S3Source, Source
from spotyolo.core.dataset.spec import DataSpec, read_data_yaml, resolve_data_yaml, write_local_data_yaml
from spotyolo.core.models import DatasetSummary

__all__ = [
    "MAX_WORKERS",
    "DataSpec",
    "DatasetSummary",
    "Entry",
    "JobInvalid",
    "LocalSource",
    "S3Source",
    "Source",
    "bounded_listing",
    "check_dataset",
    "check_label_text",
    "inspect_dataset",
    "label_path",
    "read_data_yaml",
    "resolve_data_yaml",
    "rules",
    "write_local_data_yaml",
]
