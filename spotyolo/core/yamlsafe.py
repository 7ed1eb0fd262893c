"""Reading user YAML (config.yaml, data.yaml) safely, keeping where every key was written.

User files are untrusted and their mistakes must be reported with a line and column, so this
is PyYAML's *safe* loader with: a size cap, UTF-8 only, one document, no aliases (which is how
"billion laughs" bombs expand), no duplicate keys, a mapping at the top, and YAML 1.2 floats
(``lr0: 1e-3`` is a number, as users mean it, not the string YAML 1.1 makes of it).

Also :class:`Problem` and :func:`problems_error`: every check in spotyolo collects problems and
raises one ``JobInvalid`` that shows the first 20 and the total.
"""

from __future__ import annotations

import json
import re
import reprlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from spotyolo.contract.errors import JobInvalid

#: problems listed in a refusal; the rest are counted ("... and 12 more in 3 files")
MAX_SHOWN = 20
#: a user's value echoed in a message (a 300 KB token is shown as its start and its length)
MAX_SHOWN_CHARS = 60
#: one listed problem; a file name (an S3 key, up to 1024 bytes) is cut in its middle
MAX_PROBLEM_CHARS = 300
MAX_WHERE_CHARS = 120
#: the whole refusal. It travels as a Lambda error into a Step Functions cause (32 768
#: characters), JSON-encoded twice (Validate's {"subject", "message"}, then the Lambda runtime's
#: error object, \\uXXXX for non-ASCII): encoded once it must stay under 12 000 characters, so
#: twice (at most double again) it fits with room for the stack trace. Then an SNS message
#: (256 KB) and a Fail state's cause.
MAX_REFUSAL_CHARS = 8000
MAX_REFUSAL_ESCAPED = 12_000
#: problems kept whole while checking; past this they are only counted (memory stays bounded)
MAX_KEPT = 200


def _cut(text: str, limit: int) -> str:
    """``text``, or its start, an ellipsis and its length when it is longer than ``limit``."""
    if len(text) <= limit:
        return text
    return f"{text[: max(0, limit - 20)]}… ({len(text)} chars)"


def shown(value: Any, limit: int = MAX_SHOWN_CHARS) -> str:
    """A user's value as a message echoes it: its repr, at most about ``limit`` characters.

    Text is cut before ``repr`` (a 300 KB token costs nothing); containers go through
    ``reprlib`` so a million-item list is never rendered whole.
    """
    if isinstance(value, str):
        if len(value) <= limit:
            return repr(value)
        return f"{value[:limit]!r}… ({len(value)} chars)"
    text = _SHORT_REPR.repr(value)
    return _cut(text, limit + 20)


_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxstring = MAX_SHOWN_CHARS
_SHORT_REPR.maxother = MAX_SHOWN_CHARS
_SHORT_REPR.maxlist = _SHORT_REPR.maxtuple = _SHORT_REPR.maxset = _SHORT_REPR.maxdict = 6
_SHORT_REPR.maxlevel = 2


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a job, named by file (S3 key or path), line and column."""

    where: str
    message: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        loc = self.where
        if len(loc) > MAX_WHERE_CHARS:
            half = MAX_WHERE_CHARS // 2
            loc = f"{loc[:half]}…{loc[-half:]}"
        if self.line is not None:
            loc += f":{self.line}"
            if self.column is not None:
                loc += f":{self.column}"
        return _cut(f"{loc}: {self.message}", MAX_PROBLEM_CHARS)


class ProblemList(list[Problem]):
    """Problems as a check finds them: the first :data:`MAX_KEPT` kept, the rest only counted.

    A dataset with a million bad lines costs a counter, not a million messages. ``total`` and
    ``files`` count every problem added, kept or not.
    """

    def __init__(self, items: Iterable[Problem] = ()) -> None:
        super().__init__()
        self.omitted = 0
        self.omitted_files: set[str] = set()
        self.extend(items)

    def append(self, problem: Problem) -> None:
        if len(self) < MAX_KEPT:
            super().append(problem)
        else:
            self.omitted += 1
            self.omitted_files.add(problem.where)

    def extend(self, problems: Iterable[Problem]) -> None:
        for problem in problems:
            self.append(problem)
        if isinstance(problems, ProblemList):
            self.omitted += problems.omitted
            self.omitted_files |= problems.omitted_files

    def tally(self, n: int, where: str) -> None:
        """``n`` more problems in ``where`` that a check counted without keeping them."""
        if n > 0:
            self.omitted += n
            self.omitted_files.add(where)

    @property
    def total(self) -> int:
        return len(self) + self.omitted


def problems_error(problems: Iterable[Problem], subject: str) -> JobInvalid:
    """One ``JobInvalid``: the first :data:`MAX_SHOWN` problems, then how many more in how many files.

    Bounded by construction: each problem is at most :data:`MAX_PROBLEM_CHARS` characters, the
    subject is cut, and fewer problems are listed if the whole would not fit
    :data:`MAX_REFUSAL_CHARS` (or :data:`MAX_REFUSAL_ESCAPED` once JSON-escaped).
    """
    items = problems if isinstance(problems, ProblemList) else ProblemList(problems)
    count = items.total
    head = f"{_cut(subject, 200)} is invalid ({count} problem{'s' if count != 1 else ''}):"
    lines = [f"  - {p}" for p in items[:MAX_SHOWN]]
    while True:
        message = "\n".join([head, *lines, *_more(items, len(lines))])
        if len(message) <= MAX_REFUSAL_CHARS and len(json.dumps(message)) <= MAX_REFUSAL_ESCAPED:
            break
        lines.pop()  # 20 lines of 300 characters always fit; only non-ASCII text gets here
    err = JobInvalid(message)
    err.problems = items  # type: ignore[attr-defined]
    return err


def _more(items: ProblemList, shown_count: int) -> list[str]:
    """ "... and 12 more in 3 files (32 in total)" for the problems not listed."""
    rest = items.total - shown_count
    if rest <= 0:
        return []
    files = {p.where for p in items[shown_count:]} | items.omitted_files
    where = f" in {len(files)} file{'s' if len(files) != 1 else ''}"
    return [f"  ... and {rest} more{where} ({items.total} in total; the first {shown_count} are shown)"]


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
        text = key_node.value if isinstance(key_node, yaml.ScalarNode) else "a complex key"
        return Problem(
            filename, f"key {shown(text)} is not a name (quote it, or fix the indentation)", line, column
        )
    key = str(key_node.value)
    if key in marks:
        return Problem(
            filename, f"duplicate key {shown(key)} (first on line {marks[key][0]}): keep one", line, column
        )
    return None
