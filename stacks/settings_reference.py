"""The stack settings reference (`docs/settings.md`), generated from the settings models.

Every key a `Pulumi.<stack>.yaml` may set under `acm-platform:` is a field of `StackConfig` or
of a model below it; each field's docstring is its description. `acmctl settings-reference`
prints the page, and a test fails when the committed page differs from what it prints, so the
reference cannot drift from the models.
"""

from __future__ import annotations

import sys
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from stacks.config import PROJECT, SecretSettings, StackConfig


@dataclass(frozen=True)
class Setting:
    """One documented key: its dotted path under `acm-platform:` and what the model says."""

    path: str
    kind: str
    default: str
    description: str


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The settings models an annotation holds directly (optional, union, list or mapping)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    models: list[type[BaseModel]] = []
    for argument in typing.get_args(annotation):
        models.extend(_models_in(argument))
    return models


def _container(annotation: Any) -> str:
    """The suffix a path gets for the items of a list or the entries of a mapping."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _container(typing.get_args(annotation)[0])
    if origin in (list, tuple, set, frozenset):
        return "[]"
    if origin is dict:
        return ".<name>"
    if origin in (typing.Union, types.UnionType):
        for argument in typing.get_args(annotation):
            suffix = _container(argument)
            if suffix:
                return suffix
    return ""


def _rule_names() -> dict[int, str]:
    """The shared field rules (`ImageRef`, `CronSchedule`, ...) by identity: a type in the
    reference says which rule checks it."""
    names: dict[int, str] = {}
    for module_name, module in list(sys.modules.items()):
        if module_name.split(".")[0] not in ("components", "stacks"):
            continue
        for name, value in vars(module).items():
            if typing.get_origin(value) is typing.Annotated and name[0].isupper():
                names.setdefault(id(value), name)
    return names


def _kind(annotation: Any) -> str:
    """The annotation in words a stack file's author reads: the field rules' names kept."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        rule = _rule_names().get(id(annotation))
        base = _kind(typing.get_args(annotation)[0])
        return f"{base} ({rule})" if rule else base
    if origin is Literal:
        return " \\| ".join(f"`{value}`" for value in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(members) < len(typing.get_args(annotation))
        text = " or ".join(_kind(member) for member in members)
        return f"{text} (optional)" if optional else text
    if origin in (list, tuple, set, frozenset):
        return f"list of {_kind(typing.get_args(annotation)[0])}"
    if origin is dict:
        return f"mapping of name to {_kind(typing.get_args(annotation)[1])}"
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return "object (below)"
        return {"str": "text", "int": "whole number", "float": "number", "bool": "true/false"}.get(
            annotation.__name__, annotation.__name__)
    return str(annotation).replace("typing.", "")


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is PydanticUndefined or value is None:
        return "unset"
    if isinstance(value, BaseModel):
        return "the defaults below"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value in ([], {}):
        return "empty"
    return f"`{value}`"


def _description(field: FieldInfo) -> str:
    return " ".join((field.description or "").split())


def settings_of(model: type[BaseModel], prefix: str = "") -> Iterator[Setting]:
    """Every field of ``model`` and of the models below it, depth first, in the model's order."""
    annotations = typing.get_type_hints(model, include_extras=True)
    for name, field in model.model_fields.items():
        key = field.alias or name
        path = f"{prefix}{key}"
        kind = _kind(annotations.get(name, field.annotation))
        yield Setting(path, kind, _default(field), _description(field))
        nested = _models_in(field.annotation)
        suffix = _container(field.annotation)
        for nested_model in nested:
            label = f"({nested_model.__name__})" if len(nested) > 1 else ""
            yield from settings_of(nested_model, f"{path}{suffix}{label}.")


def stack_settings() -> list[Setting]:
    """The keys of a stack file: `StackConfig`'s, with the secrets as the top-level keys they are.
    """
    settings: list[Setting] = []
    for setting in settings_of(StackConfig):
        if setting.path == "secrets":
            continue
        if setting.path.startswith("secrets."):
            setting = Setting(setting.path.removeprefix("secrets."), "secret text", "required",
                              setting.description)
        settings.append(setting)
    return settings


def undocumented() -> list[str]:
    """The paths whose field has no description: each is a docstring to write."""
    return [setting.path for setting in stack_settings() if not setting.description]


def settings_reference() -> str:
    """The Markdown page: one table per top-level key."""
    settings = stack_settings()
    secret_keys = {
        (field.alias or name) for name, field in SecretSettings.model_fields.items()}
    lines = [
        "# Stack settings reference",
        "",
        "<!-- Generated by `.venv/bin/acmctl settings-reference --out docs/settings.md` from the",
        "     settings models' field descriptions; tests/test_docs.py fails when it is stale. -->",
        "",
        f"Every key of `Pulumi.<stack>.yaml` under `{PROJECT}:`, with its type, its default and",
        "what it means. Validation (`tests/test_config_validation.py`) refuses an unknown key, a",
        "wrong type or a value outside its rule before any resource is created, naming the key's",
        "path. Secrets are set with `scripts/pulumi config set --secret --stack STACK "
        f"{PROJECT}:KEY` and never appear in plain text. How to change a setting:",
        "[operations.md](operations.md).",
        "",
    ]
    current_top = None
    for setting in settings:
        top = "secrets" if setting.path in secret_keys else setting.path.split(".")[0].split("[")[0]
        if top != current_top:
            current_top = top
            title = "Secrets" if top == "secrets" else f"`{PROJECT}:{top}`"
            lines += ["", f"## {title}", "", "| key | type | default | description |",
                      "| --- | --- | --- | --- |"]
        description = setting.description.replace("|", "\\|")
        lines.append(f"| `{setting.path}` | {setting.kind} | {setting.default} | {description} |")
    return "\n".join(lines) + "\n"
