"""One YOLO label file, checked by Ultralytics' rules before any instance is paid for."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from spotyolo.core.yamlsafe import shown

#: label files are small (a box is ~40 bytes: 2 MiB is 50 000 boxes, or hundreds of detailed
#: polygons); 32 read at once must fit the Validate Lambda's 512 MB with room to spare
MAX_LABEL_BYTES = 2 * 1024 * 1024
#: problems kept per label file; the rest of the file's bad lines are only counted
MAX_FILE_PROBLEMS = 5


@dataclass(slots=True)
class LabelCheck:
    """What one label file holds: instances per class id, and the problems by line."""

    instances: dict[int, int] = field(default_factory=dict)
    problems: list[tuple[int | None, str]] = field(default_factory=list)
    #: bad lines past the first :data:`MAX_FILE_PROBLEMS` (counted, not kept)
    more: int = 0

    @property
    def empty(self) -> bool:
        return not self.instances


def check_label_text(raw: bytes, nc: int) -> LabelCheck:
    """Check one YOLO label file: ``class x y w h`` or ``class x1 y1 x2 y2 x3 y3 ...`` per line.

    Follows Ultralytics' rules: class ids are integers in [0, nc); a box has 4 coordinates, a
    polygon at least 3 points (an even count of coordinates); every coordinate is finite and in
    [0, 1] (normalised to the image size); blank lines are fine.
    """
    result = LabelCheck()
    text = _label_text(raw, result.problems)
    if text is None:
        return result
    for number, line in enumerate(lines(text), start=1):
        fields = line.split()
        if not fields:
            continue
        problem = _line_problem(fields, nc)
        if problem:
            if len(result.problems) < MAX_FILE_PROBLEMS:
                result.problems.append((number, problem))
            else:
                result.more += 1
            continue
        cls = int(float(fields[0]))
        result.instances[cls] = result.instances.get(cls, 0) + 1
    return result


def lines(text: str) -> Iterator[str]:
    """The lines of ``text`` one at a time (``splitlines`` would hold millions of them at once)."""
    start, end = 0, len(text)
    while start < end:
        stop = text.find("\n", start)
        stop = end if stop < 0 else stop
        yield text[start:stop]
        start = stop + 1


def too_large(size: int) -> str:
    return (
        f"{size} bytes is too large for a label file (the limit is {MAX_LABEL_BYTES}): "
        "is it a label? Remove it, or split its objects"
    )


def _label_text(raw: bytes, problems: list[tuple[int | None, str]]) -> str | None:
    """The file as text, or None with the reason in ``problems`` (too large, binary, not UTF-8)."""
    if len(raw) > MAX_LABEL_BYTES:
        problems.append((None, too_large(len(raw))))
        return None
    if b"\x00" in raw:
        problems.append((None, "binary file, not a YOLO label text file"))
        return None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        bad_line = raw[: err.start].count(b"\n") + 1
        problems.append((bad_line, "not UTF-8 text: save label files as plain text"))
        return None


def _line_problem(fields: list[str], nc: int) -> str | None:
    """The first thing wrong with one line: its shape, then its class id, then its coordinates."""
    return _shape_problem(len(fields)) or _class_problem(fields[0], nc) or _coordinates_problem(fields[1:])


def _shape_problem(count: int) -> str | None:
    if count == 5 or (count >= 7 and count % 2 == 1):
        return None
    return (
        f"{count} values; a label line is 'class x y w h' (5 values) or a polygon "
        "'class x1 y1 x2 y2 x3 y3 ...' (a class and at least 3 x,y points)"
    )


def _class_problem(text: str, nc: int) -> str | None:
    cls = _number(text)
    if cls is None or not math.isfinite(cls) or not cls.is_integer():
        return f"class id {shown(text)} is not an integer"
    if not 0 <= cls < nc:
        ids = f"0-{nc - 1}" if nc > 1 else "0"
        return f"class id {int(cls)} is out of range: data.yaml has {nc} class(es), ids {ids}"
    return None


def _coordinates_problem(values: Iterable[str]) -> str | None:
    return next((problem for problem in map(_coordinate_problem, values) if problem), None)


def _coordinate_problem(value: str) -> str | None:
    coord = _number(value)
    if coord is None:
        return f"{shown(value)} is not a number"
    if not math.isfinite(coord):
        return f"coordinate {shown(value)} is not finite"
    if not 0.0 <= coord <= 1.0:
        return (
            f"coordinate {shown(value)} is outside [0, 1]: YOLO coordinates are normalised "
            "(pixels divided by the image width/height)"
        )
    return None


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None
