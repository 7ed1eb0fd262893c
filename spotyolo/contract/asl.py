"""The state machine definition: load it, substitute its placeholders, and check its structure.

The CDK app (:func:`check_template` + :func:`substitutions`, CloudFormation substitutes at
deploy) and the local engine (:func:`render_asl`) go through the same functions; the checks
refuse a definition that Step Functions would reject or that the local engine would run
differently (moto accepts a bad ``Next`` at create time, so the checks here are the only ones
before an execution hits it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from spotyolo.contract.lambdas import STATE_MACHINE_LAMBDAS, LambdaName
from spotyolo.contract.sources import ASL_PATH, require

#: the state machine's CloudWatch logging (the CDK app's and the local engine's): failures only
#: (TaskFailed, ExecutionFailed, ... with their error and cause), without execution data. The
#: Launch trainer task's parameters hold ``$$.Task.Token``: at level ALL, or with execution data,
#: the log group would hold every task token, and whoever reads it could answer the task. An
#: execution's full history stays in Step Functions (``states:GetExecutionHistory``).
LOG_LEVEL = "ERROR"
LOG_EXECUTION_DATA = False

#: the placeholder of the notification topic's ARN
TOPIC_PLACEHOLDER = "TopicArn"
#: every placeholder of the ASL file, each substituted with an ARN
PLACEHOLDERS: tuple[str, ...] = (*STATE_MACHINE_LAMBDAS, TOPIC_PLACEHOLDER)

_PLACEHOLDER_RE = re.compile(r"\$\{([A-Za-z0-9_]+)\}")
_TERMINAL = {"Succeed", "Fail"}
#: fields that name another state
_TRANSITIONS = ("Next", "Default")
#: JSONata, variables and other things the local engine cannot run
_FORBIDDEN_KEYS = {"QueryLanguage", "Assign", "Arguments", "Output", "Items", "Condition"}
#: Lambda errors worth retrying: the service, not the function, failed
TRANSIENT_LAMBDA_ERRORS = {
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
}


class AslError(ValueError):
    """The definition is broken; the message lists every problem with its state name."""


def load_asl_text(path: Path = ASL_PATH) -> str:
    return require(path).read_text(encoding="utf-8")


def placeholders(text: str) -> set[str]:
    return set(_PLACEHOLDER_RE.findall(text))


def substitute(text: str, substitutions: Mapping[str, str]) -> str:
    """Replace ``${Name}`` with its value (JSON-escaped); unknown names are left in place."""

    def repl(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in substitutions:
            return match.group(0)
        return json.dumps(str(substitutions[name]))[1:-1]

    return _PLACEHOLDER_RE.sub(repl, text)


def substitutions(function_arn: Callable[[LambdaName], str], topic_arn: str) -> dict[str, str]:
    """Placeholder -> value, for the ARNs of this deployment (CDK tokens or the engine's ARNs)."""
    values = {placeholder: function_arn(name) for placeholder, name in STATE_MACHINE_LAMBDAS.items()}
    values[TOPIC_PLACEHOLDER] = topic_arn
    return values


def _placeholder_problems(text: str, *, exact: bool) -> list[str]:
    """The pipeline's file must use exactly the contract's placeholders; another (a test's small
    machine) may use fewer, never one the contract does not name."""
    found = placeholders(text)
    if exact and found != set(PLACEHOLDERS):
        return [f"placeholders {sorted(found)} differ from the contract {sorted(PLACEHOLDERS)}"]
    unknown = found - set(PLACEHOLDERS)
    return [f"placeholders {sorted(unknown)} are not in the contract"] if unknown else []


def check_template(path: Path = ASL_PATH) -> str:
    """The unsubstituted definition, after checking its placeholders against the contract and
    its structure; raises :class:`AslError`."""
    text = load_asl_text(path)
    problems = _placeholder_problems(text, exact=True) + validate_definition(json.loads(text))
    if problems:
        raise AslError(f"{path}: " + "; ".join(problems))
    return text


def render_asl(values: Mapping[str, str], path: Path = ASL_PATH) -> str:
    """The definition with every placeholder substituted, checked once; raises :class:`AslError`."""
    raw = load_asl_text(path)
    text = substitute(raw, values)
    problems = _placeholder_problems(raw, exact=path == ASL_PATH)
    problems += validate_definition(json.loads(text), require_substituted=True)
    if problems:
        raise AslError(f"{path.name}: " + "; ".join(problems))
    return text


def _walk(value: Any, where: str) -> Iterator[tuple[str, Any, Any]]:
    """(path, key, value) for every key of every object inside ``value``."""
    if isinstance(value, dict):
        for key, sub in value.items():
            yield where, key, sub
            yield from _walk(sub, f"{where}.{key}")
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            yield from _walk(sub, f"{where}[{i}]")


def _states_of(machine: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    for name, state in (machine.get("States") or {}).items():
        yield prefix + name, state
        for branch in state.get("Branches", []) or []:
            yield from _states_of(branch, prefix + name + "/")
        for key in ("Iterator", "ItemProcessor"):
            if isinstance(state.get(key), dict):
                yield from _states_of(state[key], prefix + name + "/")


def _targets(state: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, state name) of every transition out of ``state``."""
    targets: list[tuple[str, str]] = [(f, state[f]) for f in _TRANSITIONS if f in state]
    for i, choice in enumerate(state.get("Choices", []) or []):
        if "Next" in choice:
            targets.append((f"Choices[{i}].Next", choice["Next"]))
    for i, catcher in enumerate(state.get("Catch", []) or []):
        targets.append((f"Catch[{i}].Next", catcher.get("Next")))
    return targets


def _check_catchers(name: str, state: dict[str, Any], problems: list[str]) -> None:
    catchers = state.get("Catch", []) or []
    for i, catcher in enumerate(catchers):
        names = catcher.get("ErrorEquals") or []
        if not names:
            problems.append(f"state {name!r}: Catch[{i}] has no ErrorEquals")
        if "States.ALL" in names and (len(names) > 1 or i != len(catchers) - 1):
            problems.append(f"state {name!r}: States.ALL must be alone in the last catcher (Catch[{i}])")
        if "ResultPath" not in catcher:
            problems.append(f"state {name!r}: Catch[{i}] has no ResultPath (the document would be lost)")
    retriers = state.get("Retry", []) or []
    for i, retrier in enumerate(retriers):
        names = retrier.get("ErrorEquals") or []
        if "States.ALL" in names and (len(names) > 1 or i != len(retriers) - 1):
            problems.append(f"state {name!r}: States.ALL must be alone in the last retrier (Retry[{i}])")


def _check_ending(name: str, state: dict[str, Any], problems: list[str]) -> None:
    """Terminal states end, Choices choose, every other state has exactly one of Next/End."""
    kind = state.get("Type")
    if kind in _TERMINAL:
        if "Next" in state or state.get("End"):
            problems.append(f"state {name!r}: a {kind} state has no Next/End")
    elif kind == "Choice":
        if not state.get("Choices"):
            problems.append(f"state {name!r}: Choice without Choices")
    elif ("Next" in state) == bool(state.get("End")):
        problems.append(f"state {name!r}: needs exactly one of Next or End")


def _check_nested(name: str, state: dict[str, Any], problems: list[str]) -> None:
    for j, branch in enumerate(state.get("Branches", []) or []):
        _check_machine(branch, f"state {name!r} Branches[{j}]", problems)
    for key in ("Iterator", "ItemProcessor"):
        if isinstance(state.get(key), dict):
            _check_machine(state[key], f"state {name!r} {key}", problems)


def _reachable(start: Any, edges: dict[str, set[str]]) -> set[str]:
    seen: set[str] = set()
    todo = [start] if start in edges else []
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(edges[current] - seen)
    return seen


def _check_machine(machine: dict[str, Any], where: str, problems: list[str]) -> None:
    states: dict[str, Any] = machine.get("States") or {}
    start = machine.get("StartAt")
    if not states:
        problems.append(f"{where}: no States")
        return
    if start not in states:
        problems.append(f"{where}: StartAt {start!r} is not a state")
    edges: dict[str, set[str]] = {name: set() for name in states}
    for name, state in states.items():
        if not state.get("Comment"):
            problems.append(f"state {name!r}: no Comment")
        for field, target in _targets(state):
            if target not in states:
                problems.append(f"state {name!r}: {field} {target!r} is not a state")
            else:
                edges[name].add(target)
        _check_catchers(name, state, problems)
        _check_ending(name, state, problems)
        _check_nested(name, state, problems)
    seen = _reachable(start, edges)
    problems.extend(f"state {name!r}: unreachable from {start!r}" for name in states if name not in seen)


def _check_query_language(definition: dict[str, Any], problems: list[str]) -> None:
    """JSONPath only, and no array index in a path (the two ways the local engine differs)."""
    if definition.get("QueryLanguage", "JSONPath") != "JSONPath":
        problems.append("QueryLanguage must be JSONPath (the local engine runs no JSONata)")
    for where, key, value in _walk(definition.get("States", {}), "States"):
        if key in _FORBIDDEN_KEYS and ".Parameters" not in where and ".Payload" not in where:
            problems.append(f"{where}: {key} is JSONata/variables, not JSONPath")
        if isinstance(value, str) and "{%" in value:
            problems.append(f"{where}.{key}: JSONata expression")
        is_path = isinstance(value, str) and key.endswith(".$") and value.startswith("$")
        if is_path and "$$." not in value and re.search(r"\[\d+\]", value):
            problems.append(
                f"{where}.{key}: {value!r} indexes an array in a path (the local engine reads "
                "it differently): use States.ArrayGetItem"
            )


def _check_lambda_retries(name: str, state: dict[str, Any], problems: list[str]) -> None:
    """A Lambda task retries the Lambda service's transient errors only, bounded, with jitter."""
    retriers = state.get("Retry", []) or []
    retried = {e for r in retriers for e in r.get("ErrorEquals", [])}
    if not retried:
        problems.append(f"state {name!r}: Lambda task without a Retry on transient Lambda errors")
    elif not retried <= TRANSIENT_LAMBDA_ERRORS:
        extra = sorted(retried - TRANSIENT_LAMBDA_ERRORS)
        problems.append(f"state {name!r}: retries non-transient errors {extra} (would re-run work)")
    if any("MaxAttempts" not in r or r.get("JitterStrategy") != "FULL" for r in retriers):
        problems.append(f"state {name!r}: Retry must be bounded (MaxAttempts) with JitterStrategy FULL")


def validate_definition(definition: dict[str, Any], *, require_substituted: bool = False) -> list[str]:
    """Every structural problem of ``definition`` (empty when it is sound)."""
    problems: list[str] = []
    _check_query_language(definition, problems)
    _check_machine(definition, "machine", problems)
    for name, state in _states_of(definition):
        if state.get("Type") == "Task" and "lambda:invoke" in str(state.get("Resource", "")):
            _check_lambda_retries(name, state, problems)
    if require_substituted:
        left = placeholders(json.dumps(definition))
        if left:
            problems.append(f"placeholders not substituted: {', '.join(sorted(left))}")
    return problems
