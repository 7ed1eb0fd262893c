"""Make Ultralytics run without network access (the instance's subnet has no NAT, the
laptop may be offline). Call :func:`prepare_ultralytics` before importing ``ultralytics``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

#: integrations that default on when their package is installed, each a network client
_INTEGRATIONS_OFF = (
    "sync",
    "mlflow",
    "clearml",
    "comet",
    "dvc",
    "hub",
    "neptune",
    "raytune",
    "tensorboard",
    "wandb",
)


def _font_source() -> Path | None:
    try:
        import matplotlib

        path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        return path if path.exists() else None
    except ImportError:  # pragma: no cover - matplotlib comes with ultralytics
        return None


def prepare_ultralytics(config_dir: str | os.PathLike[str] | None = None) -> Path:
    """Set ``YOLO_OFFLINE``/``YOLO_CONFIG_DIR``, place the font Ultralytics would download,
    and turn off analytics and integrations. Returns the Ultralytics config folder."""
    os.environ["YOLO_OFFLINE"] = "1"
    if config_dir is not None:
        os.environ["YOLO_CONFIG_DIR"] = str(config_dir)
    base = Path(os.environ.setdefault("YOLO_CONFIG_DIR", str(Path.home() / ".config" / "spotyolo-yolo")))
    folder = base / "Ultralytics"
    folder.mkdir(parents=True, exist_ok=True)
    font = folder / "Arial.ttf"
    source = _font_source()
    if not font.exists() and source is not None:
        shutil.copyfile(source, font)
    from ultralytics import settings

    settings.update({key: False for key in _INTEGRATIONS_OFF if key in settings})
    return folder
