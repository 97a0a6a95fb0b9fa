"""Reading a stack's configuration: from `Pulumi.<stack>.yaml`, or from the Pulumi runtime.

Both paths produce the same thing, `(values, secret_keys)` for `load_stack_config`, so the
offline render and a real `pulumi up` validate exactly the same way. The offline path never
decrypts: secrets are placeholders that name their key; only the Pulumi engine holds values.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import yaml

from stacks.config import PROJECT, StackConfigError

ROOT = Path(__file__).resolve().parent.parent
STACKS = ("local", "dev", "staging", "prod")


def secret_placeholder(key: str) -> str:
    """What a secret looks like in an offline render: never the value, always its name."""
    return f"<secret {PROJECT}:{key}>"


class _StackFileLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice in one mapping (PyYAML keeps the last one
    silently; the Pulumi CLI refuses such a file too)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.MarkedYAMLError(
                    problem=f"the key {key!r} is written twice (first on line {seen[key]}); "
                            "keep one",
                    problem_mark=key_node.start_mark)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _load_yaml(path: Path, stack: str) -> Any:
    try:
        return yaml.load(path.read_text(), Loader=_StackFileLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f"{path.name} line {mark.line + 1}, column {mark.column + 1}" if mark else path.name
        problem = str(error.problem or error)
        if "'\\t'" in problem:
            problem = "a tab character: YAML indents with spaces only"
        raise StackConfigError(stack, [("(stack)", f"{where}: {problem}")]) from None
    except yaml.YAMLError as error:
        raise StackConfigError(stack, [("(stack)", f"{path.name}: not valid YAML ({error})")]
                               ) from None


def read_stack_file(stack: str, root: Path = ROOT) -> tuple[dict[str, Any], frozenset[str]]:
    """The stack's values, with every secret as its placeholder."""
    path = root / f"Pulumi.{stack}.yaml"
    if not path.exists():
        raise StackConfigError(stack, [("(stack)", f"no stack file {path.name}")])
    document = _load_yaml(path, stack) or {}
    if not isinstance(document, dict):
        raise StackConfigError(stack, [("(stack)", f"{path.name} is not a YAML mapping")])
    return decode_stack_values(stack, document.get("config") or {})


def decode_stack_values(
    stack: str, raw_config: dict[str, Any]
) -> tuple[dict[str, Any], frozenset[str]]:
    values: dict[str, Any] = {}
    secret_keys: set[str] = set()
    problems: list[tuple[str, str]] = []
    for full_key, value in raw_config.items():
        namespace, _, key = str(full_key).partition(":")
        if namespace != PROJECT or not key:
            problems.append((str(full_key), f"is not in the {PROJECT}: namespace"))
            continue
        if isinstance(value, dict) and set(value) == {"secure"}:
            secret_keys.add(key)
            values[key] = secret_placeholder(key)
        else:
            values[key] = value
    if problems:
        raise StackConfigError(stack, problems)
    return values, frozenset(secret_keys)


def runtime_values() -> tuple[dict[str, Any], frozenset[str]]:
    """The stack's config as the Pulumi engine handed it to this program."""
    from pulumi.runtime import config as runtime_config

    merged: dict[str, Any] = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    secret_keys = set(runtime_config.get_config_secret_keys_env())
    values: dict[str, Any] = {}
    prefix = f"{PROJECT}:"
    for full_key, value in merged.items():
        if not full_key.startswith(prefix):
            continue
        key = full_key[len(prefix):]
        if runtime_config.is_config_secret(full_key) or full_key in secret_keys:
            secret_keys.add(key)
        # Objects arrive JSON-encoded; secrets and plain strings stay as they are.
        if isinstance(value, str) and value[:1] in "{[" and key not in secret_keys:
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(value)
        values[key] = value
    return values, frozenset(k for k in secret_keys if ":" not in k)
