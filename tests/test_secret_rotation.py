"""A rotated secret changes the pod template of exactly the workloads that read it at start
(the keyed digest annotation, components/base/credentials.py), so `pulumi up` after `pulumi
config set --secret` rolls them and no other; the annotation says nothing about the value."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from components.base.credentials import SECRETS_DIGEST_ANNOTATION, secrets_digest
from stacks.render import Rendering, render_values
from tests.conftest import stack_values

pytestmark = pytest.mark.slow
WORKLOAD_KINDS = ("Deployment", "StatefulSet")


def templates(rendering: Rendering) -> dict[str, dict[str, Any]]:
    """Each workload's pod template annotations."""
    return {f"{kind}/{m['metadata']['name']}":
            m["spec"]["template"]["metadata"].get("annotations") or {}
            for kind in WORKLOAD_KINDS for m in rendering.objects(kind)}


def rendered_with(stack: str, **secrets: str) -> Rendering:
    values, secret_keys = stack_values(stack)
    values.update(secrets)
    return render_values(stack, values, secret_keys)


def rolled(before: Rendering, after: Rendering) -> set[str]:
    old, new = templates(before), templates(after)
    assert old.keys() == new.keys()
    return {name for name in old if old[name] != new[name]}


# The same key in both renderings: only the rotated value differs.
KEY = "a-rotation-test-digest-key-0123456789"


@pytest.mark.parametrize(("secret", "readers"), [
    ("opensipsControlPassword", {"Deployment/opensips"}),
    ("haproxyControlPassword", {"Deployment/haproxy"}),
    ("dragonflyOpensipsPassword", {"Deployment/opensips", "StatefulSet/dragonfly"}),
    ("dragonflyEnginePassword", {"Deployment/acm-engine", "Deployment/acm-engine-backup",
                                 "StatefulSet/dragonfly"}),
    ("databasePassword", {"Deployment/acm-engine", "Deployment/acm-engine-backup",
                          "StatefulSet/yb-tserver"}),
    # Read on every request or scrape (exporter-toolkit web configs, password files): a
    # rotated value is taken without a restart, and nothing rolls.
    ("prometheusControlPassword", set()),
    ("alertmanagerControlPassword", set()),
    ("complianceExporterPassword", set()),
])
def test_a_rotated_secret_rolls_exactly_its_readers(secret: str, readers: set[str]) -> None:
    before = rendered_with("local", secretsDigestKey=KEY, **{secret: "A" * 24})
    after = rendered_with("local", secretsDigestKey=KEY, **{secret: "B" * 24})
    assert rolled(before, after) == readers


def test_the_digest_is_keyed_and_says_nothing_of_the_value() -> None:
    password = "a-rotated-control-password"
    rendering = rendered_with("local", secretsDigestKey=KEY, opensipsControlPassword=password)
    digest = templates(rendering)["Deployment/opensips"][SECRETS_DIGEST_ANNOTATION]
    assert len(digest) == 64
    # Not a plain hash of the value, and another stack's key gives another digest.
    assert digest != hashlib.sha256(password.encode()).hexdigest()
    other = rendered_with("local", secretsDigestKey="another-stacks-key-0123456789abcd",
                          opensipsControlPassword=password)
    assert templates(other)["Deployment/opensips"][SECRETS_DIGEST_ANNOTATION] != digest
    # Content and order of the inputs: the same contents in another order, the same digest.
    assert secrets_digest(KEY, {"a": "1", "b": "2"}) == secrets_digest(KEY, {"b": "2", "a": "1"})
    assert secrets_digest(KEY, {"a": "12"}) != secrets_digest(KEY, {"a1": "2"})
