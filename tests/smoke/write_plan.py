"""Write the smoke plan for a deployed stack: what to expect from the stack's own rendering,
where to look from the cluster (one running pod per role, as testinfra `kubectl://` hosts).

    python -m tests.smoke.write_plan STACK --out plan.json [--kubeconfig K] [--context C]
        [--stats-url URL] [--dragonfly HOST:PORT] [--database HOST:PORT]
        [--sip-tcp HOST:PORT] [--sip-udp HOST:PORT] [--engine-health URL ...] [--api-only]

Addresses the runner reaches (HAProxy's stats, Dragonfly, the database, the front door) come
from the options, e.g. through `kubectl port-forward` or the LoadBalancer addresses; a section
whose address is not given is left out and its checks report as skipped. `scripts/smoke` wraps
this and the pytest run.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from components.base.kube import CONFIG_HASH_ANNOTATION, RENDERED_CONFIG_LABEL
from components.base.settings import cron_fields
from components.compliance import SECRET_NAME as COMPLIANCE_SECRET
from components.haproxy import CONTROL_USER as HAPROXY_CONTROL_USER
from stacks.render import Rendering, render_stack

HAPROXY_BACKENDS = ["opensips_sip_tcp", "opensips_sip_tls", "opensips_mi"]


def longest_gap_seconds(schedule: str) -> int:
    """The longest wait between two runs of a cron schedule, over two leap-free years."""
    minutes, hours, days, months, weekdays = cron_fields(schedule)
    # Cron ORs day-of-month and day-of-week when both are restricted.
    dom_any, dow_any = len(days) == 31, len(weekdays) >= 7

    def day_matches(day: datetime) -> bool:
        if day.month not in months:
            return False
        dom, dow = day.day in days, (day.isoweekday() % 7) in weekdays
        if dom_any or dow_any:
            return dom and dow
        return dom or dow

    runs: list[datetime] = []
    day = datetime(2025, 1, 1)
    while day < datetime(2027, 1, 1):
        if day_matches(day):
            runs.extend(day.replace(hour=hour, minute=minute)
                        for hour in sorted(hours) for minute in sorted(minutes))
        day += timedelta(days=1)
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(runs)]
    return int(max(gaps))


def cluster_section(rendering: Rendering, kubeconfig: str | None,
                    context: str | None) -> dict[str, Any]:
    hpa_floor = {h["spec"]["scaleTargetRef"]["name"]: h["spec"]["minReplicas"]
                 for h in rendering.objects("HorizontalPodAutoscaler")}
    workloads = []
    for manifest in rendering.objects("Deployment") + rendering.objects("StatefulSet"):
        name = manifest["metadata"]["name"]
        template = manifest["spec"]["template"]
        workloads.append({
            "kind": manifest["kind"], "name": name,
            "selector": manifest["spec"]["selector"]["matchLabels"],
            "min_replicas": manifest["spec"].get("replicas", hpa_floor.get(name, 1)),
            "config_hash": (template["metadata"].get("annotations") or {}).get(
                CONFIG_HASH_ANNOTATION),
        })
    cron_jobs = []
    for manifest in rendering.objects("CronJob"):
        spec = manifest["spec"]
        # A run may start as late as its starting deadline and last its active deadline.
        slack = spec.get("startingDeadlineSeconds", 0) + spec["jobTemplate"]["spec"].get(
            "activeDeadlineSeconds", 0)
        cron_jobs.append({
            "name": manifest["metadata"]["name"], "schedule": spec["schedule"],
            "time_zone": spec["timeZone"],
            "max_age_seconds": longest_gap_seconds(spec["schedule"]) + slack,
        })
    return {
        "kubeconfig": kubeconfig, "context": context, "namespace": rendering.config.namespace,
        "workloads": workloads,
        "services": [s["metadata"]["name"] for s in rendering.objects("Service")
                     if s["spec"].get("selector")],
        "autoscalers": [{"name": h["metadata"]["name"],
                         "target": h["spec"]["scaleTargetRef"]["name"],
                         "min_replicas": h["spec"]["minReplicas"],
                         "max_replicas": h["spec"]["maxReplicas"]}
                        for h in rendering.objects("HorizontalPodAutoscaler")],
        "budgets": [{"name": p["metadata"]["name"],
                     "min_available": p["spec"].get("minAvailable"),
                     "max_unavailable": p["spec"].get("maxUnavailable")}
                    for p in rendering.objects("PodDisruptionBudget")],
        "cron_jobs": cron_jobs,
    }


def config_files(rendering: Rendering) -> list[dict[str, str]]:
    """Every rendered config file as a container sees it: role `workload/container`."""
    rendered = {c["metadata"]["name"]: c["data"] for c in rendering.objects("ConfigMap")
                if (c["metadata"].get("labels") or {}).get(RENDERED_CONFIG_LABEL) == "true"}
    files = []
    for manifest in rendering.objects("Deployment") + rendering.objects("StatefulSet"):
        pod = manifest["spec"]["template"]["spec"]
        # A ConfigMap volume, or the ConfigMaps of a projected one (config files next to the
        # credentials they include; the Secrets' files are not compared).
        volumes: dict[str, list[dict[str, Any]]] = {}
        for volume in pod.get("volumes", []):
            sources = ([volume["configMap"]] if "configMap" in volume else
                       [s["configMap"] for s in volume.get("projected", {}).get("sources", [])
                        if "configMap" in s])
            volumes[volume["name"]] = [s for s in sources if s["name"] in rendered]
        for container in pod.get("initContainers", []) + pod["containers"]:
            for mount in container.get("volumeMounts", []):
                for source in volumes.get(mount["name"], []):
                    data = rendered[source["name"]]
                    items = source.get("items") or [{"key": k, "path": k} for k in data]
                    for item in items:
                        if "subPath" in mount and mount["subPath"] != item["path"]:
                            continue
                        path = (mount["mountPath"] if "subPath" in mount
                                else f"{mount['mountPath']}/{item['path']}")
                        files.append({
                            "role": f"{manifest['metadata']['name']}/{container['name']}",
                            "path": path,
                            "sha256": hashlib.sha256(data[item["key"]].encode()).hexdigest(),
                        })
    return files


def compliance_section(rendering: Rendering) -> tuple[str, dict[str, Any]] | None:
    """The first long-running pod that mounts the compliance credentials, and where."""
    secret = next((s for s in rendering.objects("Secret")
                   if s["metadata"]["name"] == COMPLIANCE_SECRET), None)
    if secret is None:
        return None
    names = sorted({**secret.get("data", {}), **secret.get("stringData", {})})
    for manifest in rendering.objects("Deployment"):
        pod = manifest["spec"]["template"]["spec"]
        volumes = {v["name"] for v in pod.get("volumes", [])
                   if v.get("secret", {}).get("secretName") == COMPLIANCE_SECRET}
        for container in pod["containers"]:
            for mount in container.get("volumeMounts", []):
                if mount["name"] in volumes:
                    role = f"{manifest['metadata']['name']}/{container['name']}"
                    return role, {"secrets_dir": mount["mountPath"], "files": names}
    return None


def pod_hosts(rendering: Rendering, roles: set[str], kubeconfig: str | None,
              context: str | None) -> tuple[dict[str, str], dict[str, str]]:
    """A running pod for each `workload/container` role, as a testinfra kubectl host spec;
    and each chosen pod's address, by role."""
    from kubernetes import client as kube_client
    from kubernetes import config as kube_config

    api = kube_config.new_client_from_config(config_file=kubeconfig, context=context)
    core = kube_client.CoreV1Api(api)
    namespace = rendering.config.namespace
    selectors = {m["metadata"]["name"]: m["spec"]["selector"]["matchLabels"]
                 for m in rendering.objects("Deployment") + rendering.objects("StatefulSet")}
    hosts, addresses = {}, {}
    for role in sorted(roles):
        workload, container = role.split("/", 1)
        selector = ",".join(f"{k}={v}" for k, v in sorted(selectors[workload].items()))
        pods = [p for p in core.list_namespaced_pod(namespace, label_selector=selector).items
                if p.status.phase == "Running" and p.metadata.deletion_timestamp is None]
        if not pods:
            continue  # the checks for this role then fail with "the plan names no host"
        chosen = sorted(pods, key=lambda p: p.metadata.name)[0]
        pod = chosen.metadata.name
        addresses[role] = chosen.status.pod_ip
        spec = f"kubectl://{pod}?namespace={namespace}&container={container}"
        if kubeconfig:
            spec += f"&kubeconfig={kubeconfig}"
        if context:
            spec += f"&context={context}"
        hosts[role] = spec
    return hosts, addresses


def write_plan(stack: str, kubeconfig: str | None, context: str | None,
               addresses: dict[str, str | None], api_only: bool = False,
               engine_health: list[str] | None = None) -> dict[str, Any]:
    rendering = render_stack(stack)
    if api_only:
        return {"environment": stack, "cluster": cluster_section(rendering, kubeconfig, context)}
    files = config_files(rendering)
    roles = {f["role"] for f in files}
    plan: dict[str, Any] = {
        "environment": stack,
        "cluster": cluster_section(rendering, kubeconfig, context),
        "config_files": files,
    }
    compliance = compliance_section(rendering)
    if compliance:
        roles.add(compliance[0])
        plan["compliance"] = compliance[1]
    haproxy_role = next((r for r in roles if r.startswith("haproxy/")), None)
    if addresses["stats_url"] and haproxy_role:
        haproxy = rendering.get("Deployment", "haproxy")["spec"]["template"]["spec"]
        sip_ports = [p["containerPort"] for c in haproxy["containers"]
                     for p in c.get("ports", []) if p["name"].startswith("sip")]
        plan["haproxy"] = {"listen": [f"tcp://0.0.0.0:{port}" for port in sip_ports],
                           "stats_csv_url": addresses["stats_url"],
                           "stats_user": HAPROXY_CONTROL_USER,
                           "stats_password_env": "SMOKE_HAPROXY_PASSWORD",
                           "backends": HAPROXY_BACKENDS}
    if addresses["sip_tcp"] and addresses["sip_udp"]:
        plan["front_door"] = {"sip_tcp_address": addresses["sip_tcp"],
                              "sip_udp_address": addresses["sip_udp"]}
    sidecar = next((r for r in roles if r.startswith("opensips/dispatcher-sync")), None)
    if sidecar:
        settings = json.loads(rendering.rendered_files()["settings.json"])
        opensips = rendering.get("Deployment", "opensips")["spec"]["template"]["spec"]
        sockets = [f"{p['protocol'].lower()}://{p['containerPort']}"
                   for c in opensips["containers"] if c["name"] == "opensips"
                   for p in c.get("ports", []) if p["name"].startswith(("sip", "proxy"))]
        plan["opensips"] = {"mi_url": settings["mi_url"], "mi_user": settings["mi_user"],
                            "mi_password_file": settings["mi_password_file"],
                            "listen": sockets}
    if engine_health:
        plan["acm_engine_health_urls"] = engine_health
    if addresses["dragonfly"]:
        plan["dragonfly_address"] = addresses["dragonfly"]
    if addresses["database"]:
        plan["database"] = {"address": addresses["database"], "dbname": "yugabyte",
                            "user": "acm", "password_env": "SMOKE_DB_PASSWORD"}
    hosts, pod_addresses = pod_hosts(rendering, roles, kubeconfig, context)
    # OpenSIPS expands a wildcard socket into one listener per interface address (it never
    # binds 0.0.0.0): its sockets are checked on the address of the pod checked.
    opensips_address = pod_addresses.get("opensips/opensips")
    if "opensips" in plan and opensips_address:
        plan["opensips"]["listen"] = [spec.replace("://", f"://{opensips_address}:", 1)
                                      for spec in plan["opensips"]["listen"]]
    # The host-level checks name their roles by part; map them onto the pods found.
    for alias, prefix in (("haproxy", "haproxy/"), ("opensips-mi", sidecar or ""),
                          ("opensips", "opensips/opensips"),
                          ("compliance", compliance[0] if compliance else "")):
        match = next((spec for role, spec in hosts.items() if prefix and role.startswith(prefix)),
                     None)
        if match:
            hosts[alias] = match
    plan["hosts"] = hosts
    return plan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="write_plan", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stack")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--kubeconfig")
    parser.add_argument("--context")
    parser.add_argument("--engine-health", action="append", metavar="URL",
                        help="an ACM engine's /health URL (repeat per engine)")
    parser.add_argument("--api-only", action="store_true",
                        help="only the Kubernetes-API checks (for clusters whose pods cannot "
                             "be exec'd into, or a review without the node's addresses)")
    for option in ("stats-url", "dragonfly", "database", "sip-tcp", "sip-udp"):
        parser.add_argument(f"--{option}")
    options = parser.parse_args(argv)
    addresses = {key: getattr(options, key) for key in
                 ("stats_url", "dragonfly", "database", "sip_tcp", "sip_udp")}
    plan = write_plan(options.stack, options.kubeconfig, options.context, addresses,
                      options.api_only, options.engine_health)
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(plan, indent=2))
    left_out = [name for name in ("haproxy", "front_door", "dragonfly_address", "database",
                                  "compliance", "opensips", "acm_engine_health_urls")
                if name not in plan]
    print(f"smoke plan for {options.stack!r}: {len(plan['cluster']['workloads'])} workloads, "
          f"{len(plan.get('config_files', []))} config files, {len(plan.get('hosts', {}))} hosts"
          + (f"; left out (no address given): {', '.join(left_out)}" if left_out else ""),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
