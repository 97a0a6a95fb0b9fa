"""What `pulumi preview` would do to each stack, in the words a reviewer reads in a change request.

CI previews every stack and leaves, per stack, in one folder:

- `<stack>.preview.json`: `pulumi preview --json`, the engine's digest (steps, change summary,
  diagnostics);
- `<stack>.events.jsonl`: `pulumi preview --event-log`, for the policy verdicts, which the JSON
  digest of pulumi 3.259.0 leaves out (`pkg/backend/display/json.go`: "we don't handle policy
  events in JSON serialization"); the flag is one of the CLI's debug commands, enabled with
  `PULUMI_DEBUG_COMMANDS=true` as the Automation API does;
- `<stack>.status` (optional): the preview's exit status.

The summary names what is created, updated, replaced and deleted by type and name, puts
replacements first (a replaced StatefulSet loses its pods' identity, a replaced Service its
address), lists mandatory and advisory policy violations with their messages, and marks stacks
whose preview ran without their cluster as input-only. It prints property names, never property
values, so no secret reaches a comment.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The operations a reviewer counts, in the order a reviewer reads them.
COUNTED = ("replace", "delete", "update", "create")
# Kinds whose replacement costs more than a rollout: identity, data or address.
REPLACEMENT_RISK = {
    "StatefulSet": "pods lose their identity and volumes are re-claimed",
    "PersistentVolumeClaim": "its data goes with it",
    "Service": "its cluster address changes and clients reconnect",
    "Namespace": "everything in it is deleted",
}
# Replaced by design: the platform names its config maps after their content, so a config
# change is a new ConfigMap and a rollout (docs/architecture.md), not a loss.
REPLACED_BY_DESIGN = {"ConfigMap"}
INPUT_ONLY_MARK = "kubernetes.previewWithoutCluster is true"
MAX_KEYS_SHOWN = 6


class SummaryInputError(ValueError):
    """A preview file that is missing or not what the engine writes; names the file."""


@dataclass(frozen=True)
class Change:
    op: str
    type: str
    name: str
    keys: tuple[str, ...]

    @property
    def kind(self) -> str:
        return self.type.rsplit(":", 1)[-1]


@dataclass(frozen=True)
class Violation:
    level: str  # mandatory, advisory, remediate, disabled
    policy: str
    resource: str  # "Kind name", or "" for a stack-level rule
    message: str


@dataclass
class StackPreview:
    stack: str
    counts: dict[str, int]
    changes: list[Change]
    violations: list[Violation]
    input_only: bool
    errors: list[str]
    status: int | None = None
    failed: bool = field(init=False)

    def __post_init__(self) -> None:
        self.failed = bool(self.errors) or bool(self.status)

    @property
    def mandatory(self) -> list[Violation]:
        return [v for v in self.violations if v.level == "mandatory"]

    @property
    def advisory(self) -> list[Violation]:
        return [v for v in self.violations if v.level != "mandatory"]

    @property
    def replacements(self) -> list[Change]:
        return [c for c in self.changes if c.op == "replace"]

    def verdict(self) -> str:
        if self.mandatory:
            return "BLOCKED: mandatory policy violation"
        if self.failed:
            return "FAILED: the preview did not complete"
        if any(self.counts.get(op) for op in COUNTED):
            return "changes"
        return "no changes"


def type_and_name(urn: str) -> tuple[str, str]:
    """`urn:pulumi:STACK::PROJECT::PARENT$TYPE::NAME` -> (TYPE, NAME)."""
    parts = urn.split("::")
    if len(parts) < 4:
        return urn, urn
    return parts[2].rsplit("$", 1)[-1], "::".join(parts[3:])


def object_name(step: dict[str, Any]) -> str | None:
    """A Kubernetes object's own name (what a reviewer knows it by), from the state the step
    leads to (or, for a delete, the one it leaves); a name is never a secret."""
    for state in ("newState", "oldState"):
        inputs = (step.get(state) or {}).get("inputs") or {}
        metadata = inputs.get("metadata")
        if isinstance(metadata, dict) and isinstance(metadata.get("name"), str):
            return str(metadata["name"])
    return None


def _load_json(path: Path) -> dict[str, Any]:
    try:
        loaded = json.loads(path.read_text())
    except FileNotFoundError:
        raise SummaryInputError(f"{path}: missing (CI writes it with `pulumi preview --json`)")\
            from None
    except json.JSONDecodeError as error:
        raise SummaryInputError(f"{path}: not JSON ({error.msg} at line {error.lineno}); "
                                "was the preview's stderr written into it?") from None
    if not isinstance(loaded, dict):
        raise SummaryInputError(f"{path}: a JSON object was expected (the preview digest)")
    return loaded


def _events(path: Path) -> Iterable[dict[str, Any]]:
    if not path.exists():
        raise SummaryInputError(f"{path}: missing (CI writes it with `pulumi preview "
                                "--event-log`; the policy verdicts are only there)")
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError as error:
            raise SummaryInputError(f"{path}, line {number}: not a JSON event ({error.msg})")\
                from None
        if isinstance(event, dict):
            yield event


def _changed_keys(step: dict[str, Any]) -> tuple[str, ...]:
    keys = list(step.get("replaceReasons") or []) if step.get("op") == "replace" else []
    keys += sorted(step.get("detailedDiff") or {})
    keys += list(step.get("diffReasons") or [])
    unique: list[str] = []
    for key in keys:
        if key not in unique:
            unique.append(key)
    return tuple(unique)


def read_stack(folder: Path, stack: str) -> StackPreview:
    digest = _load_json(folder / f"{stack}.preview.json")
    changes = []
    for step in digest.get("steps") or []:
        op = step.get("op", "")
        urn = step.get("urn", "")
        kind, name = type_and_name(urn)
        if op not in COUNTED or kind == "pulumi:pulumi:Stack":
            continue
        changes.append(Change(op, kind, object_name(step) or name, _changed_keys(step)))
    diagnostics = digest.get("diagnostics") or []
    errors = [d.get("message", "").strip() for d in diagnostics if d.get("severity") == "error"]
    input_only = any(INPUT_ONLY_MARK in (d.get("message") or "") for d in diagnostics)
    violations = []
    for event in _events(folder / f"{stack}.events.jsonl"):
        policy = event.get("policyEvent")
        if not policy:
            continue
        resource = ""
        if policy.get("resourceUrn"):
            kind, name = type_and_name(policy["resourceUrn"])
            resource = f"{kind.rsplit(':', 1)[-1]} {name}"
        violations.append(Violation(policy.get("enforcementLevel", ""),
                                    policy.get("policyName", ""), resource,
                                    " ".join(str(policy.get("message", "")).split())))
        if not input_only and INPUT_ONLY_MARK in str(policy.get("message", "")):
            input_only = True
    status_file = folder / f"{stack}.status"
    status = None
    if status_file.exists():
        text = status_file.read_text().strip()
        if not text.isdigit():
            raise SummaryInputError(f"{status_file}: {text!r} is not an exit status (a whole "
                                    "number written by the pipeline after the preview)")
        status = int(text)
    violations.sort(key=lambda v: (v.level != "mandatory", v.policy, v.resource, v.message))
    counts = {op: int(n) for op, n in (digest.get("changeSummary") or {}).items()}
    order = {op: index for index, op in enumerate(COUNTED)}
    changes.sort(key=lambda c: (order[c.op], c.kind not in REPLACEMENT_RISK, c.type, c.name))
    return StackPreview(stack, counts, changes, violations, input_only, errors, status)


def stacks_in(folder: Path) -> list[str]:
    if not folder.is_dir():
        raise SummaryInputError(f"{folder}: not a folder of previews")
    stacks = sorted(path.name.removesuffix(".preview.json")
                    for path in folder.glob("*.preview.json"))
    if not stacks:
        raise SummaryInputError(f"{folder}: holds no <stack>.preview.json")
    return stacks


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _keys(change: Change) -> str:
    shown = ", ".join(f"`{key}`" for key in change.keys[:MAX_KEYS_SHOWN])
    more = len(change.keys) - MAX_KEYS_SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


def render_markdown(previews: list[StackPreview]) -> str:
    lines = ["## Pulumi preview", "",
             "| stack | verdict | replace | delete | update | create | unchanged | policy |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for p in previews:
        policy = (f"{len(p.mandatory)} mandatory, {len(p.advisory)} advisory"
                  if p.violations else "no violations")
        stack = f"`{p.stack}`" + (" (input-only)" if p.input_only else "")
        lines.append(f"| {stack} | {p.verdict()} | "
                     + " | ".join(str(p.counts.get(op, 0)) for op in COUNTED)
                     + f" | {p.counts.get('same', 0)} | {policy} |")
    risky = [(p.stack, c) for p in previews for c in p.replacements
             if c.kind not in REPLACED_BY_DESIGN]
    if risky:
        lines += ["", "**Replacements, to review first** (delete and re-create, not a rollout):"]
        for stack, change in risky:
            why = REPLACEMENT_RISK.get(change.kind)
            lines.append(f"- `{stack}`: {change.kind} `{change.name}`"
                         + (f" because of {_keys(change)}" if change.keys else "")
                         + (f"; {why}" if why else ""))
    for p in previews:
        lines += ["", f"### `{p.stack}`: {p.verdict()}"]
        if p.input_only:
            lines += ["", "*Input-only preview*: the stack sets `kubernetes.previewWithoutCluster` "
                      "and its cluster was not reached, so this shows the program's inputs, not "
                      "what the cluster would do with them."]
        if p.mandatory:
            lines += ["", "Mandatory policy violations (the change cannot be deployed):"]
            lines += [f"- `{v.policy}`" + (f" on {v.resource}" if v.resource else "")
                      + f": {_cell(v.message)}" for v in p.mandatory]
        if p.advisory:
            # Grouped per rule: one advisory rule can name every workload of a stack.
            by_policy: dict[str, list[Violation]] = {}
            for violation in p.advisory:
                by_policy.setdefault(violation.policy, []).append(violation)
            lines += ["", "Advisory policy violations (deployable; reviewed, not blocking):"]
            for policy, violations in by_policy.items():
                lines += ["", f"<details><summary><code>{policy}</code> ({violations[0].level}) "
                          f"on {len(violations)} resources</summary>", ""]
                lines += [f"- {v.resource or 'the stack'}: {_cell(v.message)}"
                          for v in violations]
                lines += ["", "</details>"]
        if p.errors:
            lines += ["", "Errors:", "", "```"] + [e for e in p.errors] + ["```"]
        elif p.failed:
            lines += ["", f"The preview exited with status {p.status}."]
        if p.changes:
            lines += ["", "<details><summary>" + f"{len(p.changes)} resources change"
                      + "</summary>", "", "| change | kind | name | what changes |",
                      "| --- | --- | --- | --- |"]
            lines += [f"| {c.op} | {c.kind} | `{_cell(c.name)}` | {_keys(c)} |"
                      for c in p.changes]
            lines += ["", "</details>"]
        elif not p.failed:
            lines += ["", "Nothing changes."]
    return "\n".join(lines) + "\n"


def summarize(folder: Path) -> tuple[str, bool]:
    """(Markdown, whether every stack may go ahead)."""
    previews = [read_stack(folder, stack) for stack in stacks_in(folder)]
    return render_markdown(previews), not any(p.mandatory or p.failed for p in previews)
