"""Reading user YAML (config.yaml, data.yaml) safely, keeping where every key was written.

User files are untrusted and their mistakes must be reported with a line and column, so this
is PyYAML's *safe* loader with: a size cap, UTF-8 only, one document, no aliases (which is how
"billion laughs" bombs expand), no duplicate keys, a mapping at the top, and YAML 1.2 floats
(``lr0: 1e-3`` is a number, as users mean it, not the string YAML 1.1 makes of it).

Also :class:`Problem` and :func:`problems_error`: every check in spotyolo collects problems and
raises one ``JobInvalid`` that shows the first 20 and the total.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from spotyolo.contract.errors import JobInvalid

MAX_SHOWN = 20


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a job, named by file (S3 key or path), line and column."""

    where: str
    message: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        loc = self.where
        if self.line is not None:
            loc += f":{self.line}"
            if self.column is not None:
                loc += f":{self.column}"
        return f"{loc}: {self.message}"


def problems_error(problems: Iterable[Problem], subject: str) -> JobInvalid:
    """One ``JobInvalid`` listing the first :data:`MAX_SHOWN` problems and how many there are."""
    items = list(problems)
    count = len(items)
    lines = [f"{subject} is invalid ({count} problem{'s' if count != 1 else ''}):"]
    lines += [f"  - {p}" for p in items[:MAX_SHOWN]]
    if count > MAX_SHOWN:
        lines.append(
            f"  ... and {count - MAX_SHOWN} more ({count} in total; the first {MAX_SHOWN} are shown)"
        )
    err = JobInvalid("\n".join(lines))
    err.problems = items  # type: ignore[attr-defined]
    return err


class YamlRefused(Exception):
    """A YAML file that is refused outright (it cannot be read as a mapping)."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


_FLOAT_12 = re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$")


class _Loader(yaml.SafeLoader):
    """Safe loader that refuses aliases (no expansion bombs) and reads ``1e-3`` as a float."""

    filename = "file"

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise YamlRefused(
                Problem(
                    self.filename,
                    "YAML aliases (*name) are not accepted: write the value out in full",
                    mark.line + 1,
                    mark.column + 1,
                )
            )
        return super().compose_node(parent, index)


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))


@dataclass
class YamlMapping:
    """A top-level mapping read from user YAML, with each key's (line, column), 1-based."""

    values: dict[str, Any]
    marks: dict[str, tuple[int, int]]
    value_marks: dict[str, tuple[int, int]]
    problems: list[Problem]
    #: marks of nested mapping keys: (key, subkey) -> (line, column)
    sub_marks: dict[tuple[str, str], tuple[int, int]]


def _mark(node: Any) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def decode_text(data: bytes | str, filename: str, max_bytes: int) -> str:
    """UTF-8 text of a user file, or ``YamlRefused`` (too large, binary, not UTF-8)."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if len(raw) > max_bytes:
        raise YamlRefused(
            Problem(
                filename, f"file is {len(raw)} bytes; the limit is {max_bytes} bytes: is this the right file?"
            )
        )
    if b"\x00" in raw:
        raise YamlRefused(Problem(filename, "file is binary (contains NUL bytes), not YAML text"))
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise YamlRefused(
            Problem(filename, f"not UTF-8 text (byte {raw[err.start]:#04x}): save the file as UTF-8", line)
        ) from None
    return text


def load_mapping(data: bytes | str, filename: str, *, max_bytes: int = 64 * 1024) -> YamlMapping:
    """Parse user YAML whose top level must be a mapping with string keys.

    Raises ``YamlRefused`` when the file cannot be read as a mapping at all; other problems
    (duplicate or non-string keys) are returned in ``problems`` so they are reported together
    with the rest.
    """
    text = decode_text(data, filename, max_bytes)
    loader = _Loader(text)
    loader.filename = filename
    try:
        return _read_mapping(loader, _top_mapping(loader, filename), filename)
    except YamlRefused:
        raise
    except yaml.MarkedYAMLError as err:
        what = " ".join(str(x) for x in (err.context, err.problem) if x)
        mark = err.problem_mark or err.context_mark
        raise YamlRefused(_problem_at(filename, f"not valid YAML: {what}", mark)) from None
    except yaml.YAMLError as err:
        raise YamlRefused(Problem(filename, f"not valid YAML: {err}")) from None
    except RecursionError:
        raise YamlRefused(Problem(filename, "nested too deeply to be a config file")) from None
    finally:
        loader.dispose()


def _problem_at(filename: str, message: str, mark: Any) -> Problem:
    """A problem at a PyYAML mark (0-based), when there is one."""
    return Problem(filename, message, mark.line + 1 if mark else None, mark.column + 1 if mark else None)


def _top_mapping(loader: _Loader, filename: str) -> yaml.MappingNode:
    """The one document's top node, which must be a mapping."""
    try:
        node = loader.get_single_node()
    except yaml.composer.ComposerError as err:
        if "single document" in str(err.problem or "") or "expected a single document" in str(err):
            raise YamlRefused(
                _problem_at(
                    filename,
                    "more than one YAML document ('---'): put every key in one document",
                    err.problem_mark,
                )
            ) from None
        raise
    if node is None:
        raise YamlRefused(Problem(filename, "file is empty: it must be a mapping of 'key: value' lines"))
    if not isinstance(node, yaml.MappingNode):
        kind = "a list" if isinstance(node, yaml.SequenceNode) else "a single value"
        line, column = _mark(node)
        raise YamlRefused(
            Problem(filename, f"the file is {kind}; it must be a mapping of 'key: value' lines", line, column)
        )
    return node


def _read_mapping(loader: _Loader, node: yaml.MappingNode, filename: str) -> YamlMapping:
    """Each key's value and marks; a bad or repeated key is a problem, and is left out."""
    result = YamlMapping({}, {}, {}, [], {})
    for key_node, value_node in node.value:
        problem = _key_problem(key_node, result.marks, filename)
        if problem:
            result.problems.append(problem)
            continue
        key = str(key_node.value)
        result.marks[key] = _mark(key_node)
        result.value_marks[key] = _mark(value_node)
        if isinstance(value_node, yaml.MappingNode):
            for sub_key, _ in value_node.value:
                if isinstance(sub_key, yaml.ScalarNode):
                    result.sub_marks[(key, str(sub_key.value))] = _mark(sub_key)
        result.values[key] = loader.construct_object(value_node, deep=True)
    return result


def _key_problem(key_node: Any, marks: dict[str, tuple[int, int]], filename: str) -> Problem | None:
    """A top-level key must be a plain string, written once."""
    line, column = _mark(key_node)
    if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != "tag:yaml.org,2002:str":
        shown = key_node.value if isinstance(key_node, yaml.ScalarNode) else "a complex key"
        return Problem(
            filename, f"key {shown!r} is not a name (quote it, or fix the indentation)", line, column
        )
    key = str(key_node.value)
    if key in marks:
        return Problem(
            filename, f"duplicate key {key!r} (first on line {marks[key][0]}): keep one", line, column
        )
    return None
