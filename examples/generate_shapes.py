"""Generate the synthetic 'shapes' dataset: circles, squares and triangles on noisy backgrounds.

    python examples/generate_shapes.py examples/shapes/dataset --train 48 --val 24

Writes an Ultralytics dataset (``data.yaml``, ``train|val/images|labels``) that a scratch
``yolo11n.yaml`` learns in about a minute on a laptop CPU. Deterministic for a given seed.
"""

from __future__ import annotations

import argparse
import math
import random
from pathlib import Path

from PIL import Image, ImageDraw

NAMES = ["circle", "square", "triangle"]


def _draw_shape(draw: ImageDraw.ImageDraw, cls: int, cx: float, cy: float, r: float, color: tuple) -> None:
    if cls == 0:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
    elif cls == 1:
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=color)
    else:
        pts = [
            (cx + r * math.cos(a), cy + r * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)
        ]
        draw.polygon(pts, fill=color)


def make_image(
    rng: random.Random, size: int
) -> tuple[Image.Image, list[tuple[int, float, float, float, float]]]:
    """One image with 1-3 non-overlapping shapes and its YOLO boxes (cls, x, y, w, h)."""
    background = tuple(rng.randint(0, 90) for _ in range(3))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    for _ in range(size * size // 40):  # speckle noise
        x, y = rng.randrange(size), rng.randrange(size)
        draw.point((x, y), fill=tuple(rng.randint(0, 120) for _ in range(3)))
    boxes: list[tuple[int, float, float, float, float]] = []
    placed: list[tuple[float, float, float]] = []
    for _ in range(rng.randint(1, 3)):
        for _try in range(20):
            r = rng.uniform(size * 0.10, size * 0.22)
            cx, cy = rng.uniform(r, size - r), rng.uniform(r, size - r)
            if all(math.hypot(cx - px, cy - py) > r + pr + 2 for px, py, pr in placed):
                break
        else:
            continue
        cls = rng.randrange(len(NAMES))
        color = tuple(rng.randint(150, 255) for _ in range(3))
        _draw_shape(draw, cls, cx, cy, r, color)
        placed.append((cx, cy, r))
        top = cy - r
        bottom = cy + r if cls != 2 else cy + r * 0.5
        half_w = r if cls != 2 else r * math.cos(math.pi / 6)
        boxes.append((cls, cx / size, (top + bottom) / 2 / size, 2 * half_w / size, (bottom - top) / size))
    return image, boxes


def generate(out_dir: str | Path, train: int = 48, val: int = 24, size: int = 96, seed: int = 0) -> Path:
    """Write the dataset under ``out_dir`` and return the path of its ``data.yaml``."""
    out = Path(out_dir)
    rng = random.Random(seed)
    for split, count in (("train", train), ("val", val)):
        (out / split / "images").mkdir(parents=True, exist_ok=True)
        (out / split / "labels").mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image, boxes = make_image(rng, size)
            stem = f"{split}_{i:05d}"
            image.save(out / split / "images" / f"{stem}.png")
            lines = [f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}" for c, x, y, w, h in boxes]
            (out / split / "labels" / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    data_yaml = out / "data.yaml"
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(NAMES))
    data_yaml.write_text(f"train: train/images\nval: val/images\nnc: {len(NAMES)}\nnames:\n{names}\n")
    return data_yaml


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--train", type=int, default=48)
    parser.add_argument("--val", type=int, default=24)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = generate(args.out_dir, args.train, args.val, args.size, args.seed)
    print(f"wrote {args.train} train + {args.val} val images -> {path}")


if __name__ == "__main__":
    main()
