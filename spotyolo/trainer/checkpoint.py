"""Making a checkpoint written on another machine resumable here.

Ultralytics' ``resume=True`` reads absolute ``data``, ``save_dir``, ``project``, ``name`` and
``model`` from ``ckpt['train_args']``: they name the old instance's folders, so they are
rewritten for this machine. The run's ``results.csv`` is restored next to it, cut to the
epochs the checkpoint holds, so the history has every epoch exactly once.

Ultralytics writes ``best.pt`` only in an epoch whose fitness equals ``best_fitness``, which a
resume restores from the checkpoint: the run's ``best.pt`` is kept in S3 beside ``last.pt`` and
put back into the run's weights folder, else a resumed run that never beats its best has none.
A checkpoint of the last epoch (or of an early stop) is a finished run: it is validated and
reported, not trained again.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: the key of a mid-epoch checkpoint (spotyolo.trainer.ultralytics_midepoch.KEY, which imports
#: Ultralytics: this module must not)
MIDEPOCH_KEY = "spotyolo_midepoch"


@dataclass(frozen=True)
class ResumeInfo:
    #: epochs finished in the checkpoint (resume starts at epoch finished + 1, 1-based)
    finished: int
    epochs: int
    #: training is over (the last epoch, or an early stop): validate and report, do not resume
    done: bool = False
    #: the 1-based epoch of the best fitness so far (0: unknown)
    best_epoch: int = 0
    #: batches of the next epoch already trained (a mid-epoch checkpoint); 0 at an epoch's end
    batches_done: int = 0
    #: batches in an epoch (a mid-epoch checkpoint; 0 otherwise)
    batches: int = 0


def _load(path: Path) -> dict[str, Any]:
    import torch

    ckpt: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    return ckpt


def inspect(path: Path) -> ResumeInfo | None:
    """What the checkpoint holds, or None when it is no epoch's checkpoint (stripped: the
    optimizer gone and epoch -1, as Ultralytics leaves last.pt after the final validation)."""
    ckpt = _load(path)
    epoch = int(ckpt.get("epoch", -1))
    args = ckpt.get("train_args") or {}
    epochs = int(args.get("epochs", 0))
    midepoch = ckpt.get(MIDEPOCH_KEY) or {}
    if ckpt.get("optimizer") is None or (epoch < 0 and not midepoch):
        return None
    finished = epoch + 1
    if midepoch:  # inside epoch finished + 1: never a finished run
        return ResumeInfo(
            finished=finished,
            epochs=epochs,
            best_epoch=int((ckpt.get("stopper") or {}).get("best_epoch") or 0),
            batches_done=int(midepoch.get("batches_done", 0)),
            batches=int(midepoch.get("batches", 0)),
        )
    best_epoch = int((ckpt.get("stopper") or {}).get("best_epoch") or 0)
    patience = int(args.get("patience") or 0)  # 0: no early stopping
    early_stop = patience > 0 and best_epoch > 0 and finished - best_epoch >= patience
    return ResumeInfo(
        finished=finished, epochs=epochs, done=finished >= epochs or early_stop, best_epoch=best_epoch
    )


def train_args(path: Path) -> dict[str, Any]:
    """The training arguments stored in a checkpoint."""
    return dict(_load(path).get("train_args") or {})


def rewrite_paths(
    path: Path,
    *,
    data: Path,
    save_dir: Path,
    updates: dict[str, Any] | None = None,
    best: Path | None = None,
) -> None:
    """Point the checkpoint's stored training arguments at this machine's folders.

    With ``best`` (the run's best.pt, put back), the checkpoint's ``best_fitness`` is raised to
    best.pt's own when that is higher: best.pt is uploaded before last.pt, so an upload cut
    short between the two leaves a best.pt one epoch ahead, and Ultralytics must not replace
    it with a worse epoch.
    """
    import torch

    ckpt = _load(path)
    kept = _load(best).get("best_fitness") if best is not None and best.is_file() else None
    if kept is not None and (ckpt.get("best_fitness") is None or float(kept) > float(ckpt["best_fitness"])):
        ckpt["best_fitness"] = kept
    args = dict(ckpt.get("train_args") or {})
    args.update(
        data=str(data),
        save_dir=str(save_dir),
        project=str(save_dir.parent),
        name=save_dir.name,
        model=str(path),
        resume=str(path),
        exist_ok=True,
    )
    args.update(updates or {})
    ckpt["train_args"] = args
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(path)


def _rows_from_train_results(results: dict[str, list[Any]]) -> str:
    keys = list(results)
    rows = zip(*(results[k] for k in keys), strict=False)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(keys)
    writer.writerows(rows)
    return out.getvalue()


def restore_results(path: Path, csv_text: str | None, finished: int, checkpoint: Path | None = None) -> int:
    """Write ``path`` (results.csv) with the rows of epochs 1..``finished``; returns the row count.

    ``csv_text`` is the run's uploaded results.csv; it can hold a row more than the checkpoint
    (the upload order is checkpoint, then results) and that row is dropped, since the epoch
    is trained again. Without it, the rows stored inside the checkpoint are used.
    """
    if csv_text is None and checkpoint is not None:
        results = _load(checkpoint).get("train_results") or {}
        csv_text = _rows_from_train_results(results) if results else None
    if not csv_text:
        return 0
    lines = csv_text.splitlines()
    header, rows = lines[0], lines[1:]
    kept = []
    seen: set[int] = set()
    for row in rows:
        try:
            epoch = int(float(row.split(",", 1)[0]))
        except ValueError:
            continue
        if epoch <= finished and epoch not in seen:
            seen.add(epoch)
            kept.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *kept]) + "\n")
    log.info("restored results.csv with %d earlier epoch(s)", len(kept))
    return len(kept)
