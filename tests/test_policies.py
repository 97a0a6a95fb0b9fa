"""The policy pack: every rule bites on a bad resource and passes the good one, through the
very policy objects the pack registers; every stack passes under its enforcement config."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pulumi_policy import (
    PolicyResource,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from policies.pack import POLICIES
from stacks.render import Rendering
from stacks.stack_files import STACKS
from tests.conftest import rendering_of

ROOT = Path(__file__).resolve().parents[1]
Resources = list[dict[str, Any]]


def stack_resources(rendering: Rendering) -> Resources:
    return [{"type": r.type, "name": r.name, "props": copy.deepcopy(r.inputs)}
            for r in rendering.resources if r.type.startswith("kubernetes:")]


def as_the_engine_sends(value: Any) -> Any:
    """The policy analyzer receives every number as a float (maxUnavailable 0 is 0.0)."""
    if isinstance(value, dict):
        return {key: as_the_engine_sends(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_the_engine_sends(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def enforcement(stack: str) -> dict[str, Any]:
    return dict(json.loads((ROOT / "policies" / "enforcement" / f"{stack}.json").read_text()))


def violations(resources: Resources, settings: dict[str, Any] | None = None
               ) -> dict[str, list[str]]:
    """Run every registered policy the way the analyzer does; messages by policy name."""
    settings = settings or {}
    found: dict[str, list[str]] = {}
    for policy in POLICIES:
        config = settings.get(policy.name) if isinstance(settings.get(policy.name), dict) else {}
        messages: list[str] = []

        def report(message: str, urn: str | None = None, into: list[str] = messages) -> None:
            into.append(message)

        if isinstance(policy, ResourceValidationPolicy):
            for item in resources:
                args = ResourceValidationArgs(item["type"], item["props"], f"urn:{item['name']}",
                                              item["name"], None, None, config)
                policy.validate(args, report)
        elif isinstance(policy, StackValidationPolicy):
            policy_resources = [PolicyResource(item["type"], item["props"], f"urn:{item['name']}",
                                               item["name"], None, None, None, [], {})
                                for item in resources]
            policy.validate(StackValidationArgs(policy_resources, config), report)
        if messages:
            found[policy.name] = messages
    return found


def find(resources: Resources, kind: str, name: str) -> dict[str, Any]:
    for item in resources:
        if item["props"].get("kind") == kind and item["props"]["metadata"]["name"] == name:
            props: dict[str, Any] = item["props"]
            return props
    raise KeyError(f"{kind} {name}")


def container(resources: Resources, kind: str, name: str, index: int = 0) -> dict[str, Any]:
    props = find(resources, kind, name)
    spec = props["spec"]
    if kind == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    found: dict[str, Any] = spec["template"]["spec"]["containers"][index]
    return found


def rendered_config_map(resources: Resources, file_name: str) -> dict[str, Any]:
    for item in resources:
        if item["props"].get("kind") == "ConfigMap" and file_name in item["props"].get("data", {}):
            props: dict[str, Any] = item["props"]
            return props
    raise KeyError(file_name)


def drop(resources: Resources, kind: str, predicate: Callable[[dict[str, Any]], bool]) -> None:
    resources[:] = [item for item in resources if not (
        item["props"].get("kind") == kind and predicate(item["props"]))]


Mutation = Callable[[Resources], None]
BAD: list[tuple[str, str, Mutation, str]] = [
    ("requests-and-limits", "memory limit missing",
     lambda r: container(r, "Deployment", "opensips")["resources"]["limits"].pop("memory"),
     "resources.limits.memory is not set"),
    ("requests-and-limits", "memory limit below request",
     lambda r: container(r, "Deployment", "acm-engine")["resources"]["limits"].update(
         memory="64Mi"), "memory limit 64Mi is below its request"),
    ("pinned-images", ":latest",
     lambda r: container(r, "Deployment", "haproxy").update(image="haproxy:latest"),
     "uses :latest"),
    ("pinned-images", "untagged",
     lambda r: container(r, "CronJob", "ncc-report-daily").update(image="registry/acm/job"),
     "has no tag"),
    ("image-digests", "a new tag without its digest",
     lambda r: container(r, "Deployment", "haproxy").update(
         image="docker.io/library/haproxy:2.6.22"),
     "image 'docker.io/library/haproxy:2.6.22' has no @sha256 digest"),
    ("pod-security", "privileged",
     lambda r: container(r, "Deployment", "haproxy")["securityContext"].update(privileged=True),
     "privileged"),
    ("pod-security", "root",
     lambda r: (container(r, "Deployment", "acm-engine")["securityContext"].update(
         runAsNonRoot=False)), "runAsNonRoot is not true"),
    ("pod-security", "privilege escalation",
     lambda r: container(r, "Deployment", "acm-engine")["securityContext"].update(
         allowPrivilegeEscalation=True), "allowPrivilegeEscalation is not false"),
    ("pod-security", "writable root",
     lambda r: container(r, "Deployment", "haproxy")["securityContext"].update(
         readOnlyRootFilesystem=False), "root filesystem is writable"),
    ("pod-security", "SYS_ADMIN on OpenSIPS",
     lambda r: container(r, "Deployment", "opensips")["securityContext"]["capabilities"].update(
         add=["NET_ADMIN", "SYS_ADMIN"]), "adds ['SYS_ADMIN']"),
    ("pod-security", "NET_ADMIN outside OpenSIPS",
     lambda r: container(r, "Deployment", "haproxy")["securityContext"]["capabilities"].update(
         add=["NET_ADMIN"]), "outside OpenSIPS"),
    ("pod-security", "hostNetwork",
     lambda r: find(r, "Deployment", "haproxy")["spec"]["template"]["spec"].update(
         hostNetwork=True), "hostNetwork is set"),
    ("pod-security", "hostPath",
     lambda r: find(r, "Deployment", "acm-engine")["spec"]["template"]["spec"].setdefault(
         "volumes", []).append({"name": "host", "hostPath": {"path": "/"}}), "is a hostPath"),
    ("no-secrets-in-configmaps", "password",
     lambda r: rendered_config_map(r, "haproxy.cfg")["data"].update(
         {"extra.conf": "db_password = hunter2hunter2\n"}), "holds a credential"),
    ("no-secrets-in-configmaps", "private key",
     lambda r: rendered_config_map(r, "haproxy.cfg")["data"].update(
         {"tls.pem": "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"}),
     "holds a private key"),
    ("opensips-tls13-only", "TLS 1.2",
     lambda r: rendered_config_map(r, "opensips.cfg")["data"].update(
         {"opensips.cfg": rendered_config_map(r, "opensips.cfg")["data"]["opensips.cfg"]
          .replace("[sip]TLSv1_3", "[sip]TLSv1_2")}), "'[sip]TLSv1_2' is not TLSv1_3 only"),
    ("opensips-tls13-only", "no tls_method",
     lambda r: rendered_config_map(r, "opensips.cfg")["data"].update(
         {"opensips.cfg": "\n".join(
             line for line in rendered_config_map(r, "opensips.cfg")["data"]["opensips.cfg"]
             .splitlines() if "tls_method" not in line)}), "without tls_method"),
    ("probes", "no readiness",
     lambda r: container(r, "Deployment", "acm-engine").pop("readinessProbe"),
     "no readinessProbe"),
    ("probes", "no liveness on a StatefulSet",
     lambda r: container(r, "StatefulSet", "dragonfly").pop("livenessProbe"),
     "no livenessProbe"),
    ("sip-path-rollout", "maxUnavailable 1",
     lambda r: find(r, "Deployment", "opensips")["spec"]["strategy"]["rollingUpdate"].update(
         maxUnavailable=1), "maxUnavailable is 1"),
    ("sip-path-rollout", "no spread",
     lambda r: find(r, "Deployment", "haproxy")["spec"]["template"]["spec"].pop(
         "topologySpreadConstraints"), "not spread across nodes"),
    ("compliance-cron-jobs", "UTC",
     lambda r: find(r, "CronJob", "ncc-report-weekly")["spec"].update(timeZone="UTC"),
     "must be 'Africa/Lagos'"),
    ("compliance-cron-jobs", "Allow",
     lambda r: find(r, "CronJob", "ncc-report-incidents")["spec"].update(
         concurrencyPolicy="Allow"), "must be Forbid"),
    ("compliance-cron-jobs", "no starting deadline",
     lambda r: find(r, "CronJob", "ncc-report-monthly")["spec"].pop("startingDeadlineSeconds"),
     "startingDeadlineSeconds is not set"),
    ("compliance-cron-jobs", "daily ends after 06:00",
     lambda r: find(r, "CronJob", "ncc-report-daily")["spec"]["jobTemplate"]["spec"].update(
         activeDeadlineSeconds=1800), "ends after 06:00 WAT"),
    ("sip-path-budgets", "no PDB",
     lambda r: drop(r, "PodDisruptionBudget", lambda p: p["metadata"]["name"] == "haproxy"),
     "Deployment haproxy has no PodDisruptionBudget"),
    ("sip-path-budgets", "PDB at the floor",
     lambda r: find(r, "PodDisruptionBudget", "opensips")["spec"].update(minAvailable=3),
     "minAvailable 3 is not below the replica floor 3"),
    ("hpa-min-replicas", "two OpenSIPS in prod",
     lambda r: (find(r, "HorizontalPodAutoscaler", "opensips")["spec"].update(minReplicas=2),
                find(r, "PodDisruptionBudget", "opensips")["spec"].update(minAvailable=1)),
     "minReplicas 2 is below 3"),
    ("default-deny", "no default deny",
     lambda r: drop(r, "NetworkPolicy", lambda p: not p["spec"]["podSelector"].get(
         "matchLabels") and not p["spec"].get("egress") and not p["spec"].get("ingress")),
     "has no default-deny NetworkPolicy"),
]


@pytest.mark.parametrize("numbers", ["as rendered", "as the engine sends them"])
@pytest.mark.parametrize(("policy", "case", "mutate", "message"), BAD,
                         ids=[f"{b[0]}:{b[1]}" for b in BAD])
def test_rule_bites_on_its_bad_case(prod: Rendering, policy: str, case: str, mutate: Mutation,
                                    message: str, numbers: str) -> None:
    baseline = violations(stack_resources(prod), enforcement("prod"))
    resources = stack_resources(prod)
    mutate(resources)
    if numbers == "as the engine sends them":
        resources = as_the_engine_sends(resources)
    # What the mutation added. The advisory image-digests rule names every image already, and
    # any image a case changes again: it only counts for its own cases.
    found = {name: new for name, messages in violations(resources, enforcement("prod")).items()
             if (new := [m for m in messages if m not in baseline.get(name, [])])
             and (name not in ADVISORY_BY_DESIGN or name == policy)}
    assert list(found) == [policy], found
    assert any(message in text for text in found[policy]), found[policy]


def test_every_registered_policy_has_a_bad_case() -> None:
    assert {policy.name for policy in POLICIES} == {case[0] for case in BAD}


ADVISORY_BY_DESIGN = {"image-digests"}


@pytest.mark.parametrize("stack", STACKS)
def test_stack_passes_under_its_enforcement_config(stack: str) -> None:
    resources = stack_resources(rendering_of(stack))
    for view in (resources, as_the_engine_sends(resources)):
        found = violations(view, enforcement(stack))
        assert {name: m for name, m in found.items() if name not in ADVISORY_BY_DESIGN} == {}
    for name in ADVISORY_BY_DESIGN:
        level = enforcement(stack).get(name, enforcement(stack)["all"])
        assert level == "advisory", f"{stack}: {name} is {level}"


def test_every_image_without_a_digest_is_named_and_one_with_a_digest_is_not(
        prod: Rendering) -> None:
    resources = stack_resources(prod)
    images = {c["image"] for r in resources
              for spec in [r["props"].get("spec", {})]
              for template in [spec.get("jobTemplate", {}).get("spec", spec).get("template")]
              if template for c in template["spec"]["containers"]
              + template["spec"].get("initContainers", [])}
    named = " ".join(violations(resources, enforcement("prod"))["image-digests"])
    assert all(repr(image) in named for image in images), images
    digest = "registry.acm.internal/acm/opensips:4.0.1-acm1@sha256:" + "a" * 64
    container(resources, "Deployment", "opensips").update(image=digest)
    assert repr(digest) not in " ".join(violations(resources, enforcement("prod"))["image-digests"])


def test_prod_and_staging_are_mandatory_dev_and_local_advisory() -> None:  # "all" levels
    assert {stack: enforcement(stack)["all"] for stack in STACKS} == {
        "prod": "mandatory", "staging": "mandatory", "dev": "advisory", "local": "advisory"}


def test_the_advisory_config_relaxes_the_replica_floor_only_where_it_says(
        prod: Rendering) -> None:
    resources = stack_resources(prod)
    find(resources, "HorizontalPodAutoscaler", "opensips")["spec"].update(minReplicas=2)
    find(resources, "PodDisruptionBudget", "opensips")["spec"].update(minAvailable=1)
    assert "hpa-min-replicas" in violations(resources, enforcement("prod"))
    assert "hpa-min-replicas" not in violations(resources, enforcement("dev"))
