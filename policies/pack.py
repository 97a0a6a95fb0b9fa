"""The CrossGuard registrations of the rules in policies/rules.py."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from policies.rules import (
    RESOURCE_RULES,
    STACK_RULES,
    Resource,
    ResourceRule,
    StackRule,
)

PACK_NAME = "acm-platform"
CONFIG_SCHEMAS: dict[str, PolicyConfigSchema] = {
    "pod-security": PolicyConfigSchema(properties={
        "writableRootAllowed": {"type": "array", "items": {"type": "string"}, "default": []},
    }),
    "hpa-min-replicas": PolicyConfigSchema(properties={
        "minimum": {"type": "integer", "default": 3, "minimum": 1},
    }),
}


def _config(args: Any) -> Mapping[str, Any]:
    return args.get_config() or {}


def _resource_policy(name: str, description: str, rule: ResourceRule) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        resource = Resource(args.resource_type, args.name, args.props)
        for message in rule(resource, _config(args)):
            report_violation(f"{resource.kind} {resource.k8s_name}: {message}", None)

    return ResourceValidationPolicy(name=name, description=description, validate=validate,
                                    config_schema=CONFIG_SCHEMAS.get(name))


def _stack_policy(name: str, description: str, rule: StackRule) -> StackValidationPolicy:
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        by_name = {r.name: r for r in args.resources}
        resources = [Resource(r.resource_type, r.name, r.props) for r in args.resources]
        for resource_name, message in rule(resources, _config(args)):
            found = by_name.get(resource_name)
            report_violation(message, found.urn if found is not None else None)

    return StackValidationPolicy(name=name, description=description, validate=validate,
                                 config_schema=CONFIG_SCHEMAS.get(name))


POLICIES: list[Policy] = [
    *(_resource_policy(name, description, rule)
      for name, (description, rule) in RESOURCE_RULES.items()),
    *(_stack_policy(name, description, rule)
      for name, (description, rule) in STACK_RULES.items()),
]
# Mandatory unless a stack's enforcement file (policies/enforcement/<stack>.json) says otherwise.
DEFAULT_ENFORCEMENT = EnforcementLevel.MANDATORY
