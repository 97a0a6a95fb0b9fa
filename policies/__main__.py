"""Entry point the Pulumi CLI runs for `--policy-pack policies`."""

from pulumi_policy import PolicyPack

from policies.pack import DEFAULT_ENFORCEMENT, PACK_NAME, POLICIES

PolicyPack(name=PACK_NAME, policies=POLICIES, enforcement_level=DEFAULT_ENFORCEMENT)
