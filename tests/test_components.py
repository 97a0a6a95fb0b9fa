"""The resource graph each component builds, checked on the rendered prod and local stacks."""

from __future__ import annotations

from typing import Any

import pytest

from components.base import kube
from stacks.render import Rendering
from tests.conftest import render_modified

SIP_PATH = ("opensips", "haproxy", "acm-engine")


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def workloads(rendering: Rendering) -> list[dict[str, Any]]:
    return rendering.objects("Deployment") + rendering.objects("StatefulSet")


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def test_opensips_follows_the_production_shape(prod: Rendering) -> None:
    hpa = prod.get("HorizontalPodAutoscaler", "opensips")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 10)
    targets = {m["resource"]["name"]: m["resource"]["target"]["averageUtilization"]
               for m in hpa["metrics"]}
    assert targets == {"cpu": 70, "memory": 80}
    up = hpa["behavior"]["scaleUp"]
    assert {(p["type"], p["value"], p["periodSeconds"]) for p in up["policies"]} == {
        ("Percent", 50, 30), ("Pods", 2, 30)}
    assert up["selectPolicy"] == "Max"
    down = hpa["behavior"]["scaleDown"]
    assert [(p["type"], p["value"], p["periodSeconds"]) for p in down["policies"]] == [
        ("Percent", 25, 60)]
    assert prod.get("PodDisruptionBudget", "opensips")["spec"]["minAvailable"] == 2
    deployment = prod.get("Deployment", "opensips")
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


@pytest.mark.parametrize("name", ["opensips", "acm-engine"])
def test_hpa_scaled_deployments_leave_replicas_to_the_hpa(prod: Rendering, name: str) -> None:
    assert "replicas" not in prod.get("Deployment", name)["spec"]
    hpa = prod.get("HorizontalPodAutoscaler", name)["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}


def test_acm_engine_has_three_active_and_one_backup(prod: Rendering) -> None:
    assert prod.get("HorizontalPodAutoscaler", "acm-engine")["spec"]["minReplicas"] == 3
    backup = prod.get("Deployment", "acm-engine-backup")
    assert backup["spec"]["replicas"] == 1
    active_selector = prod.get("Deployment", "acm-engine")["spec"]["selector"]["matchLabels"]
    # The active set's selector must not adopt the backup's pods, and the other way round.
    assert not selects(active_selector, backup["spec"]["template"]["metadata"]["labels"])
    for engine in ("acm-engine", "acm-engine-backup"):
        for container in containers(prod.get("Deployment", engine)):
            assert container["livenessProbe"]["httpGet"]["path"] == "/health"
            assert container["readinessProbe"]["httpGet"]["path"] == "/health"


def test_haproxy_has_at_least_two_replicas_and_a_pdb(prod: Rendering) -> None:
    deployment = prod.get("Deployment", "haproxy")
    assert deployment["spec"]["replicas"] >= 2
    pdb = prod.get("PodDisruptionBudget", "haproxy")["spec"]
    assert pdb["minAvailable"] < deployment["spec"]["replicas"]


def test_every_pdb_selects_its_workload(any_stack: Rendering) -> None:
    for pdb in any_stack.objects("PodDisruptionBudget"):
        selector = pdb["spec"]["selector"]["matchLabels"]
        matched = [w["metadata"]["name"] for w in workloads(any_stack)
                   if selects(selector, w["spec"]["template"]["metadata"]["labels"])]
        assert matched == [pdb["metadata"]["name"]], pdb["metadata"]["name"]


def test_every_workload_selector_matches_its_pod_template(any_stack: Rendering) -> None:
    for workload in workloads(any_stack):
        selector = workload["spec"]["selector"]["matchLabels"]
        assert selects(selector, workload["spec"]["template"]["metadata"]["labels"])


def test_every_service_selects_pods_that_serve_its_ports(any_stack: Rendering) -> None:
    for service in any_stack.objects("Service"):
        selector = service["spec"]["selector"]
        pods = [w for w in workloads(any_stack)
                if selects(selector, w["spec"]["template"]["metadata"]["labels"])]
        assert pods, f"Service {service['metadata']['name']} selects no pods"
        for port in service["spec"]["ports"]:
            target = port["targetPort"]
            for pod in pods:
                names = {p["name"]: p.get("protocol", "TCP")
                         for c in containers(pod) for p in c.get("ports", [])}
                assert target in names, (service["metadata"]["name"], target)
                assert names[target] == port.get("protocol", "TCP")


def test_every_container_has_probes_resources_and_a_hardened_context(
    any_stack: Rendering,
) -> None:
    for workload in workloads(any_stack):
        name = workload["metadata"]["name"]
        pod = pod_spec(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert "hostNetwork" not in pod
        for container in containers(workload):
            assert "livenessProbe" in container and "readinessProbe" in container, name
            resources = container["resources"]
            assert set(resources) == {"requests", "limits"}, name
            assert set(resources["requests"]) == {"cpu", "memory"}, name
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["privileged"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            added = set(context["capabilities"].get("add", []))
            if name == "opensips" and container["name"] == "opensips":
                assert added == {"NET_ADMIN", "NET_RAW"}
            else:
                assert not added, name
            assert not container["image"].endswith(":latest")


def test_sip_path_spreads_across_nodes(prod: Rendering) -> None:
    for name in SIP_PATH:
        constraints = pod_spec(prod.get("Deployment", name))["topologySpreadConstraints"]
        hard = [c for c in constraints if c["whenUnsatisfiable"] == "DoNotSchedule"]
        assert hard and hard[0]["topologyKey"] == "kubernetes.io/hostname", name
        assert hard[0]["labelSelector"]["matchLabels"] == \
            prod.get("Deployment", name)["spec"]["selector"]["matchLabels"]


def test_udp_sip_goes_through_a_load_balancer_that_keeps_the_caller(prod: Rendering) -> None:
    service = prod.get("Service", "opensips-sip-udp")["spec"]
    assert service["type"] == "LoadBalancer"
    assert service["externalTrafficPolicy"] == "Local"
    assert service["sessionAffinity"] == "ClientIP"
    assert {p["protocol"] for p in service["ports"]} == {"UDP"}
    # HAProxy cannot balance UDP: nothing of HAProxy's may carry it.
    for haproxy_service in ("haproxy-sip", "haproxy-admin"):
        protocols = {p.get("protocol", "TCP")
                     for p in prod.get("Service", haproxy_service)["spec"]["ports"]}
        assert protocols == {"TCP"}
    assert prod.get("Service", "haproxy-sip")["spec"]["externalTrafficPolicy"] == "Local"


def test_proxy_protocol_ports_accept_only_haproxy(prod: Rendering) -> None:
    policy = prod.get("NetworkPolicy", "flows-opensips")["spec"]
    proxy_ports = {prod.config.opensips.ports.proxy_tcp, prod.config.opensips.ports.proxy_tls}
    haproxy_selector = kube.HAPROXY.selector("prod")
    rules = [rule for rule in policy["ingress"]
             if proxy_ports & {p["port"] for p in rule["ports"]}]
    assert rules, "no ingress rule opens the PROXY-protocol ports"
    for rule in rules:
        assert rule["from"] == [{"podSelector": {"matchLabels": haproxy_selector}}]


def test_the_opensips_http_port_accepts_only_haproxy_and_prometheus(prod: Rendering) -> None:
    # httpd listens on the pod address (metrics and the MI): the NetworkPolicy is what keeps
    # the unauthenticated MI from everyone but HAProxy's management backend and Prometheus.
    policy = prod.get("NetworkPolicy", "flows-opensips")["spec"]
    http = prod.config.opensips.ports.http
    sources = [peer for rule in policy["ingress"] if http in {p["port"] for p in rule["ports"]}
               for peer in rule["from"]]
    assert sorted(sources, key=str) == sorted(
        [{"podSelector": {"matchLabels": kube.HAPROXY.selector("prod")}},
         {"podSelector": {"matchLabels": kube.PROMETHEUS.selector("prod")}}], key=str)


def test_namespace_is_default_deny(any_stack: Rendering) -> None:
    policy = any_stack.get("NetworkPolicy", "default-deny")["spec"]
    assert policy == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


def test_workloads_use_their_own_service_accounts_without_tokens(prod: Rendering) -> None:
    accounts = {sa["metadata"]["name"] for sa in prod.objects("ServiceAccount")}
    for workload in workloads(prod):
        pod = pod_spec(workload)
        assert pod["serviceAccountName"] in accounts
        assert pod["automountServiceAccountToken"] is False


def test_rendered_configs_are_content_named_and_immutable(prod: Rendering) -> None:
    for config_map in prod.objects("ConfigMap"):
        assert config_map["immutable"] is True
        digest = kube.content_hash(config_map["data"])
        assert config_map["metadata"]["name"].endswith(digest[:10])


def test_a_config_change_rolls_only_the_workloads_that_use_it(prod: Rendering) -> None:
    changed = render_modified("prod", "haproxy.healthCheck.interSeconds", 5)
    assert _template(changed, "haproxy") != _template(prod, "haproxy")
    assert _template(changed, "opensips") == _template(prod, "opensips")
    assert _template(changed, "acm-engine") == _template(prod, "acm-engine")


def test_an_opensips_config_change_rolls_opensips(prod: Rendering) -> None:
    changed = render_modified("prod", "opensips.circuitBreaker.openSeconds", 45)
    assert _template(changed, "opensips") != _template(prod, "opensips")
    old = _template(prod, "opensips")["metadata"]["annotations"][kube.CONFIG_HASH_ANNOTATION]
    new = _template(changed, "opensips")["metadata"]["annotations"][kube.CONFIG_HASH_ANNOTATION]
    assert old != new
    assert _template(changed, "haproxy") == _template(prod, "haproxy")


def _template(rendering: Rendering, deployment: str) -> dict[str, Any]:
    template: dict[str, Any] = rendering.get("Deployment", deployment)["spec"]["template"]
    return template


def test_yugabyte_runs_replication_factor_three_in_prod(prod: Rendering) -> None:
    for name in ("yb-master", "yb-tserver"):
        stateful_set = prod.get("StatefulSet", name)["spec"]
        assert stateful_set["replicas"] == 3
        assert stateful_set["serviceName"] == f"{name}-headless"
        assert prod.get("Service", f"{name}-headless")["spec"]["clusterIP"] == "None"
        assert stateful_set["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]
    master_args = containers(prod.get("StatefulSet", "yb-master"))[0]["args"]
    assert "--replication_factor=3" in master_args


def test_local_stack_has_no_cloud_load_balancer(local: Rendering) -> None:
    types = {s["spec"].get("type", "ClusterIP") for s in local.objects("Service")}
    assert "LoadBalancer" not in types


def test_provider_has_a_cluster_identifier(prod: Rendering) -> None:
    providers = [r for r in prod.resources if r.type == "pulumi:providers:kubernetes"]
    assert [p.inputs["clusterIdentifier"] for p in providers] == ["acm-prod"]


def test_every_platform_part_is_a_component(prod: Rendering) -> None:
    components = {r.type for r in prod.resources if r.type.startswith("acm:platform:")}
    assert components >= {"acm:platform:PlatformFoundation", "acm:platform:OpenSipsCluster",
                          "acm:platform:HaproxyTier", "acm:platform:AcmEngine",
                          "acm:platform:YugabyteDb", "acm:platform:Dragonfly",
                          "acm:platform:ClickHouse", "acm:platform:Monitoring"}


def test_secrets_never_reach_the_render(prod: Rendering) -> None:
    secret = prod.get("Secret", "opensips-sip-tls")
    assert secret["stringData"]["tls.key"] == "<secret acm-platform:sipTlsPrivateKey>"
    for config_map in prod.objects("ConfigMap"):
        for text in config_map["data"].values():
            assert "PRIVATE KEY" not in text


def test_grafana_reads_its_credentials_from_files_and_runs_as_a_high_uid(prod: Rendering) -> None:
    pod = prod.get("Deployment", "grafana")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env and "GF_SECURITY_ADMIN_USER" not in env
    assert not [e for e in container["env"] if "valueFrom" in e]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"]["value"] == f"{mounts['admin']}/admin-password"
    assert env["GF_SECURITY_ADMIN_USER__FILE"]["value"] == f"{mounts['admin']}/admin-user"
    volume = next(v for v in pod["volumes"] if v["name"] == "admin")
    assert volume["secret"] == {"secretName": "grafana-admin", "defaultMode": 0o440}
    assert pod["securityContext"]["runAsUser"] >= 10000


def test_rollout_timing_follows_how_haproxy_finds_and_drops_opensips(prod: Rendering) -> None:
    """A new OpenSIPS counts as available only once HAProxy can send it calls (DNS TTL, the
    re-resolve interval, `rise` checks a second apart); an old one keeps serving after it left
    the endpoints until HAProxy stopped sending it calls, and its grace period still holds the
    SIP transaction timeout after that."""
    from components.haproxy import (
        CLUSTER_DNS_TTL_SECONDS,
        RESOLVE_SECONDS,
        opensips_admission_seconds,
    )

    check = prod.config.haproxy.health_check
    deployment = prod.get("Deployment", "opensips")["spec"]
    pod = deployment["template"]["spec"]
    opensips = next(c for c in pod["containers"] if c["name"] == "opensips")
    pre_stop = opensips["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert deployment["minReadySeconds"] == opensips_admission_seconds(check)
    assert deployment["minReadySeconds"] > CLUSTER_DNS_TTL_SECONDS + RESOLVE_SECONDS + check.rise
    assert pre_stop > CLUSTER_DNS_TTL_SECONDS + RESOLVE_SECONDS
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + 32  # SIP timer B
    haproxy = prod.get("Deployment", "haproxy")["spec"]["template"]["spec"]
    assert haproxy["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"] >= 5
    config = prod.rendered_files()["haproxy.cfg"]
    assert f"hold valid {RESOLVE_SECONDS}s" in config


def test_clickhouse_has_no_passwordless_user(prod: Rendering) -> None:
    """The image's default user (no password, any network) is removed; the engines' own user
    has a SHA-256 password hash, never the password, and the engines read it from a file."""
    import hashlib
    import xml.etree.ElementTree as ElementTree

    from components.datastores import clickhouse_users

    users = ElementTree.fromstring(clickhouse_users("an-engine-password-0123"))
    assert users.find("users/default").get("remove") == "remove"  # type: ignore[union-attr]
    engine = users.find("users/acm_engine")
    assert engine is not None
    assert engine.findtext("password_sha256_hex") == hashlib.sha256(
        b"an-engine-password-0123").hexdigest()
    assert "an-engine-password-0123" not in clickhouse_users("an-engine-password-0123")
    statefulset = prod.get("StatefulSet", "clickhouse")["spec"]["template"]["spec"]
    mounts = {m["mountPath"] for m in statefulset["containers"][0]["volumeMounts"]}
    assert "/etc/clickhouse-server/users.d" in mounts
    engine_env = {e["name"]: e for e in prod.get("Deployment", "acm-engine")["spec"]["template"]
                  ["spec"]["containers"][0]["env"]}
    assert engine_env["ACM_CLICKHOUSE_USERNAME"]["value"] == "acm_engine"
    assert engine_env["ACM_CLICKHOUSE_PASSWORD_FILE"]["value"] == "/etc/acm/clickhouse/password"
