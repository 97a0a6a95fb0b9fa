"""The Pulumi program: validate the stack's config first, then build the platform."""

from __future__ import annotations

import pulumi

from stacks.config import load_stack_config
from stacks.platform import build_platform
from stacks.stack_files import runtime_values


def main() -> None:
    stack = pulumi.get_stack()
    values, secret_keys = runtime_values()
    # Raises before any resource is registered: a bad key never half-deploys a stack.
    config = load_stack_config(stack, values, secret_keys)
    platform = build_platform(config, instance=stack)
    pulumi.export("namespace", config.namespace)
    pulumi.export("opensipsConfigHash", platform.opensips.config.hash)
    pulumi.export("haproxyConfigHash", platform.haproxy.config.hash)
