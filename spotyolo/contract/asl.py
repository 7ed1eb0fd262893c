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


def check_template(path: Path = ASL_PATH) -> str:
    """The unsubstituted definition, after checking its placeholders against the contract and
    its structure; raises :class:`AslError`."""
    text = load_asl_text(path)
    found = placeholders(text)
    problems = []
    if found != set(PLACEHOLDERS):
        problems.append(f"placeholders {sorted(found)} differ from the contract {sorted(PLACEHOLDERS)}")
    problems += validate_definition(json.loads(text))
    if problems:
        raise AslError(f"{path}: " + "; ".join(problems))
    return text


def render_asl(values: Mapping[str, str], path: Path = ASL_PATH) -> str:
    """The definition with every placeholder substituted, checked; raises :class:`AslError`."""
    text = substitute(check_template(path), values)
    problems = validate_definition(json.loads(text), require_substituted=True)
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
        kind = state.get("Type")
        if not state.get("Comment"):
            problems.append(f"state {name!r}: no Comment")
        targets: list[tuple[str, str]] = [(f, state[f]) for f in _TRANSITIONS if f in state]
        for i, choice in enumerate(state.get("Choices", []) or []):
            if "Next" in choice:
                targets.append((f"Choices[{i}].Next", choice["Next"]))
        catchers = state.get("Catch", []) or []
        for i, catcher in enumerate(catchers):
            targets.append((f"Catch[{i}].Next", catcher.get("Next")))
            names = catcher.get("ErrorEquals") or []
            if not names:
                problems.append(f"state {name!r}: Catch[{i}] has no ErrorEquals")
            if "States.ALL" in names and (len(names) > 1 or i != len(catchers) - 1):
                problems.append(f"state {name!r}: States.ALL must be alone in the last catcher (Catch[{i}])")
            if "ResultPath" not in catcher:
                problems.append(f"state {name!r}: Catch[{i}] has no ResultPath (the document would be lost)")
        for i, retrier in enumerate(state.get("Retry", []) or []):
            names = retrier.get("ErrorEquals") or []
            if "States.ALL" in names and (len(names) > 1 or i != len(state["Retry"]) - 1):
                problems.append(f"state {name!r}: States.ALL must be alone in the last retrier (Retry[{i}])")
        for field, target in targets:
            if target not in states:
                problems.append(f"state {name!r}: {field} {target!r} is not a state")
            else:
                edges[name].add(target)
        if kind in _TERMINAL:
            if "Next" in state or state.get("End"):
                problems.append(f"state {name!r}: a {kind} state has no Next/End")
        elif kind == "Choice":
            if not state.get("Choices"):
                problems.append(f"state {name!r}: Choice without Choices")
        elif ("Next" in state) == bool(state.get("End")):
            problems.append(f"state {name!r}: needs exactly one of Next or End")
        for branch_key in ("Branches",):
            for j, branch in enumerate(state.get(branch_key, []) or []):
                _check_machine(branch, f"state {name!r} {branch_key}[{j}]", problems)
        for key in ("Iterator", "ItemProcessor"):
            if isinstance(state.get(key), dict):
                _check_machine(state[key], f"state {name!r} {key}", problems)
    # reachability from StartAt
    seen: set[str] = set()
    todo = [start] if start in states else []
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        todo.extend(edges[current] - seen)
    for name in states:
        if name not in seen:
            problems.append(f"state {name!r}: unreachable from {start!r}")


def validate_definition(definition: dict[str, Any], *, require_substituted: bool = False) -> list[str]:
    """Every structural problem of ``definition`` (empty when it is sound)."""
    problems: list[str] = []
    if definition.get("QueryLanguage", "JSONPath") != "JSONPath":
        problems.append("QueryLanguage must be JSONPath (the local engine runs no JSONata)")
    _check_machine(definition, "machine", problems)
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
    for name, state in _states_of(definition):
        if state.get("Type") == "Task" and "lambda:invoke" in str(state.get("Resource", "")):
            retried = {e for r in state.get("Retry", []) or [] for e in r.get("ErrorEquals", [])}
            if not retried:
                problems.append(f"state {name!r}: Lambda task without a Retry on transient Lambda errors")
            elif not retried <= TRANSIENT_LAMBDA_ERRORS:
                extra = sorted(retried - TRANSIENT_LAMBDA_ERRORS)
                problems.append(f"state {name!r}: retries non-transient errors {extra} (would re-run work)")
            for r in state.get("Retry", []) or []:
                if "MaxAttempts" not in r or r.get("JitterStrategy") != "FULL":
                    problems.append(
                        f"state {name!r}: Retry must be bounded (MaxAttempts) with JitterStrategy FULL"
                    )
    if require_substituted:
        left = placeholders(json.dumps(definition))
        if left:
            problems.append(f"placeholders not substituted: {', '.join(sorted(left))}")
    return problems
