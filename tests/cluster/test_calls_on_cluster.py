"""SIP through the deployed local platform on the real node: SIPp on the host calls HAProxy's
NodePort on the node's address, HAProxy passes the call with the PROXY protocol to an OpenSIPS
pod, OpenSIPS asks an ACM engine stand-in pod and sends the clean call on to the media-gateway
stand-in pod, which answers and hangs up. A fraud-prefix number is declined with 603. The
engine pods saw the caller's own address, and Prometheus (in its pod) scraped the calls from
OpenSIPS."""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from components.opensips.config_files import SIDECAR_METRICS_PORT, exported_metric
from stacks.pod_logs import pod_log
from stacks.render import Rendering
from tests.cluster.faults import wait_for
from tests.cluster.kube import (
    NODE_ADDRESS,
    Cluster,
    job_ending,
    job_of,
    node_port,
    pod_exec,
    prometheus_api,
    prometheus_query,
    readiness,
)
from tests.conftest import rendering_of
from tests.engine import Engine
from tests.sip.lab import CLEAN_NUMBER, FRAUD_NUMBER, basic_authorization, place_call

pytestmark = pytest.mark.slow
STACK = "local"


# When the module's `pulumi up` ended (time.time()): the Watchdog's arrival is measured from it.
UP_ENDED: dict[str, float] = {}


@pytest.fixture(scope="module")
def deployed(control_plane: Path, engine: Engine) -> Iterator[tuple[Cluster, Rendering]]:
    stack = engine.stack(STACK)
    stack.up(on_output=lambda _: None)
    UP_ENDED["at"] = time.time()
    cluster, rendering = Cluster(control_plane), rendering_of(STACK)
    try:
        wait_for(lambda: all(s.ready for s in readiness(cluster, rendering)), 120,
                 "every part of the stack ready")
        yield cluster, rendering
    finally:
        stack.destroy(on_output=lambda _: None)


def engine_messages(cluster: Cluster, namespace: str) -> str:
    """What every engine stand-in pod received (its SIPp message trace)."""
    core = cluster.core()
    texts = []
    for pod in core.list_namespaced_pod(
            namespace, label_selector="app.kubernetes.io/name in (acm-engine,acm-engine-backup)"
    ).items:
        texts.append(pod_exec(core, pod.metadata.name, namespace, ["cat", "/tmp/messages.log"]))
    return "\n".join(texts)


def test_calls_through_the_deployed_platform(deployed: tuple[Cluster, Rendering]) -> None:
    cluster, rendering = deployed
    namespace = rendering.config.namespace
    sip_port = node_port(cluster, namespace, "haproxy-sip", "sip-tcp")

    clean = place_call(sip_port, CLEAN_NUMBER, "caller.xml", transport="t1",
                       host=NODE_ADDRESS, caller=NODE_ADDRESS)
    # INVITE, 302 from the engine pod, on to the gateway pod: 200, ACK, its BYE answered.
    assert clean.returncode == 0, clean.stdout[-3000:] + clean.stderr
    fraud = place_call(sip_port, FRAUD_NUMBER, "caller_declined.xml", transport="t1",
                       host=NODE_ADDRESS, caller=NODE_ADDRESS)
    assert fraud.returncode == 0, fraud.stdout[-3000:] + fraud.stderr

    # The engine was told the caller's address, which HAProxy carried in the PROXY header:
    # the host's, not HAProxy's pod address.
    invites = [m for m in re.split(r"\n(?=-{5,})", engine_messages(cluster, namespace))
               if "INVITE sip:" in m]
    callers = {found.group(1) for m in invites
               if (found := re.search(r"^X-ACM-Caller-IP: (\S+)", m, re.M))}
    assert callers == {NODE_ADDRESS}, invites[-2:]

    # Prometheus, in its pod, scraped both calls from the OpenSIPS pods.
    metric = exported_metric("calls_total")

    def scraped_both() -> bool:
        result = prometheus_query(cluster, namespace, f"sum({metric})")
        return bool(result) and float(result[0]["value"][1]) >= 2  # type: ignore[index]

    wait_for(scraped_both, 90, "Prometheus scraped both calls")
    fraud_metric = exported_metric("fraud_detected")
    declined = prometheus_query(cluster, namespace, f"sum({fraud_metric})")
    assert float(declined[0]["value"][1]) == 1  # type: ignore[index]


def test_control_endpoints_on_the_pods_ask_for_their_account(
        deployed: tuple[Cluster, Rendering]) -> None:
    """From the host (the pod bridge: what a cluster without NetworkPolicy enforcement lets
    anyone reach), each OpenSIPS pod's MI and metrics and each HAProxy pod's stats and metrics
    answer 401 without credentials and 200 with the account from the part's Secret; the
    sidecar's reloads and Prometheus's scrapes authenticate (both targets up)."""
    import base64
    import urllib.error
    import urllib.request

    cluster, rendering = deployed
    namespace, core = rendering.config.namespace, cluster.core()
    config = rendering.config

    def account(secret: str) -> str:
        password = base64.b64decode(
            core.read_namespaced_secret(secret, namespace).data["password"]).decode()
        return basic_authorization(password)

    def pod_addresses(name: str) -> list[str]:
        return [p.status.pod_ip for p in core.list_namespaced_pod(
            namespace, label_selector=f"app.kubernetes.io/name={name}").items
            if p.status.phase == "Running" and p.metadata.deletion_timestamp is None]

    mi_call = b'{"jsonrpc": "2.0", "id": 1, "method": "version"}'
    endpoints = [(address, config.opensips.ports.http, path, body, "opensips-control")
                 for address in pod_addresses("opensips")
                 for path, body in (("/mi", mi_call), ("/metrics", None))]
    endpoints += [(address, SIDECAR_METRICS_PORT, "/metrics", None, "opensips-control")
                  for address in pod_addresses("opensips")]
    endpoints += [(address, port, path, None, "haproxy-control")
                  for address in pod_addresses("haproxy")
                  for port, path in ((config.haproxy.ports.stats, "/stats;csv"),
                                     (config.haproxy.ports.metrics, "/metrics"))]
    assert len(endpoints) >= 4, endpoints
    for address, port, path, body, secret in endpoints:
        url = f"http://{address}:{port}{path}"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=5)
        assert refused.value.code == 401, url
        headers = {"Authorization": account(secret)}
        if body is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=body, headers=headers)
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert answer.status == 200, url

    # The sidecar reloaded OpenSIPS's dispatcher over the MI with its mounted password.
    for pod in core.list_namespaced_pod(
            namespace, label_selector="app.kubernetes.io/name=opensips").items:
        log = pod_log(core, pod.metadata.name, namespace,
                      container="dispatcher-sync")
        assert '"event": "ds_reload"' in log, log[-2000:]
    # Prometheus scrapes both with their password files: every target of the two jobs up.
    # Its DNS discovery refreshes every 30 s, so pods the stack (re)started just now may not
    # be targets yet: wait for them rather than read one early answer.
    def all_targets_up(job: str) -> bool:
        result = prometheus_query(cluster, namespace, f'up{{job="{job}"}}')
        return bool(result) and all(r["value"][1] == "1" for r in result)  # type: ignore[index]

    for job in ("opensips", "opensips-sidecar", "haproxy"):
        wait_for(functools.partial(all_targets_up, job), 90,
                 f"every {job} target up in Prometheus, scraped with its password file")


def test_alerts_reach_every_alertmanager_replica_which_asks_for_its_account(
        deployed: tuple[Cluster, Rendering]) -> None:
    """Each Alertmanager pod answers 401 without the account from its Secret and 200 with it;
    the replicas gossip as one cluster; Prometheus lists every replica as active (it
    authenticates: a refused send would drop it) and the always-firing Watchdog reaches them."""
    import base64
    import urllib.error
    import urllib.request

    from components.alerting import ALERTMANAGER_PORT, CONTROL_SECRET

    cluster, rendering = deployed
    namespace, core = rendering.config.namespace, cluster.core()
    replicas = rendering.config.monitoring.alertmanager.replicas
    password = base64.b64decode(
        core.read_namespaced_secret(CONTROL_SECRET, namespace).data["password"]).decode()
    account = {"Authorization": basic_authorization(password)}
    pods = [p.status.pod_ip for p in core.list_namespaced_pod(
        namespace, label_selector="app.kubernetes.io/name=alertmanager").items
        if p.status.phase == "Running"]
    assert len(pods) == replicas >= 2, pods

    def get(address: str, path: str, headers: dict[str, str]) -> object:
        url = f"http://{address}:{ALERTMANAGER_PORT}{path}"
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    timeout=5) as answer:
            return json.loads(answer.read())

    for address in pods:
        for path in ("/api/v2/status", "/api/v2/alerts", "/-/healthy", "/metrics"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                get(address, path, {})
            assert refused.value.code == 401, (address, path)

    def gossiping() -> bool:
        return all(len(get(a, "/api/v2/status", account)["cluster"]["peers"]) == replicas  # type: ignore[index]
                   for a in pods)

    wait_for(gossiping, 60, f"every Alertmanager pod sees {replicas} peers")

    def prometheus_sends_to_all() -> bool:
        active = prometheus_api(cluster, namespace, "alertmanagers")["activeAlertmanagers"]
        return sorted(a["url"] for a in active) == sorted(
            f"http://{a}:{ALERTMANAGER_PORT}/api/v2/alerts" for a in pods)

    wait_for(prometheus_sends_to_all, 90, "Prometheus lists every Alertmanager replica")

    def watchdog_arrived() -> bool:
        return all(any(alert["labels"]["alertname"] == "Watchdog"  # type: ignore[index]
                       for alert in get(a, "/api/v2/alerts", account))  # type: ignore[attr-defined]
                   for a in pods)

    started = time.monotonic()
    wait_for(watchdog_arrived, 120, "the Watchdog alert at every Alertmanager replica")
    print(f"Watchdog at every replica {time.monotonic() - started:.0f} s after the check began")


# --- alerts that reach a person: the webhook receiver stand-in is each receiver's far end ---


def notifications(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    """Every notification the receiver stand-in took, oldest first, read with its account."""
    import base64
    import urllib.request

    core = cluster.core()
    password = base64.b64decode(core.read_namespaced_secret(
        "alert-receiver-stand-in", namespace).data["password"]).decode()
    (pod,) = [p for p in core.list_namespaced_pod(
        namespace, label_selector="app.kubernetes.io/name=alert-receiver-stand-in").items
        if p.status.phase == "Running" and p.metadata.deletion_timestamp is None]
    request = urllib.request.Request(
        f"http://{pod.status.pod_ip}:8080/received",
        headers={"Authorization": basic_authorization(password, user="alertmanager")})
    with urllib.request.urlopen(request, timeout=5) as answer:
        found: list[dict[str, Any]] = json.loads(answer.read())
        return found


def alerts_at(cluster: Cluster, namespace: str, receiver: str, alertname: str,
              status: str = "firing", since: float = 0.0) -> list[tuple[float, dict[str, Any]]]:
    """(when it arrived, the alert) for each `alertname` alert in `status` that `receiver` got
    after `since`."""
    return [(n["received_at"], alert) for n in notifications(cluster, namespace)
            if n["receiver"] == receiver and n["received_at"] >= since
            for alert in n["body"]["alerts"]
            if alert["labels"]["alertname"] == alertname and alert["status"] == status]


def test_the_watchdog_reaches_its_receiver_after_the_up(
        deployed: tuple[Cluster, Rendering]) -> None:
    """The dead man's switch: Prometheus's always-firing Watchdog, through Alertmanager's
    watchdog route, at the receiver with the account, within 2 minutes of the up's end."""
    cluster, rendering = deployed
    namespace = rendering.config.namespace
    wait_for(lambda: bool(alerts_at(cluster, namespace, "watchdog", "Watchdog")), 120,
             "the Watchdog at the watchdog receiver")
    first, alert = alerts_at(cluster, namespace, "watchdog", "Watchdog")[0]
    print(f"Watchdog at its receiver {first - UP_ENDED['at']:.0f} s after the up ended")
    assert first - UP_ENDED["at"] < 120
    assert alert["annotations"]["runbook_url"].endswith("/Watchdog.md")
    # Routed to its own receiver only: it never pages the others.
    for other in ("on-call", "compliance", "warnings", "platform"):
        assert not alerts_at(cluster, namespace, other, "Watchdog"), other


def test_no_engine_pages_on_call_and_resolves_when_the_engines_are_back(
        deployed: tuple[Cluster, Rendering]) -> None:
    """A real fault on the call path: every engine pod gone (both Deployments scaled to 0; an
    HPA does not scale a Deployment at 0). AcmNoHealthyEngine reaches the on-call receiver
    within its `for` (60 s) + the route's group_wait (10 s) + 90 s (Prometheus's DNS
    discovery refresh of 30 s, a scrape and an evaluation of 15 s each, and slack), with its
    labels, summary and runbook; with the engines back, the resolved notification follows."""
    cluster, rendering = deployed
    config = rendering.config
    namespace, apps = config.namespace, cluster.apps()
    base_url = config.monitoring.runbook_base_url
    replicas = {"acm-engine": config.acm_engine.autoscaling.min_replicas,
                "acm-engine-backup": config.acm_engine.backup_replicas}
    fault = time.time()
    try:
        for name in replicas:
            apps.patch_namespaced_deployment_scale(name, namespace, {"spec": {"replicas": 0}})
        wait_for(lambda: bool(alerts_at(cluster, namespace, "on-call", "AcmNoHealthyEngine",
                                        since=fault)), 240, "AcmNoHealthyEngine at on-call")
        arrived, alert = alerts_at(cluster, namespace, "on-call", "AcmNoHealthyEngine",
                                   since=fault)[0]
        print(f"AcmNoHealthyEngine at on-call {arrived - fault:.0f} s after the engines went")
        assert arrived - fault <= 60 + 10 + 90
        assert alert["labels"]["severity"] == "critical"
        assert alert["labels"]["area"] == "sip-path"
        assert alert["labels"]["environment"] == "local"
        assert alert["annotations"]["summary"] == "No ACM engine is up: every call fails open"
        assert alert["annotations"]["runbook_url"] == f"{base_url}/AcmNoHealthyEngine.md"
        # A SIP-path page goes to on-call only.
        assert not alerts_at(cluster, namespace, "compliance", "AcmNoHealthyEngine")
    finally:
        back = time.time()
        for name, count in replicas.items():
            apps.patch_namespaced_deployment_scale(name, namespace,
                                                   {"spec": {"replicas": count}})
    wait_for(lambda: all(s.ready for s in readiness(cluster, rendering)), 180,
             "every part ready with the engines back")
    wait_for(lambda: bool(alerts_at(cluster, namespace, "on-call", "AcmNoHealthyEngine",
                                    status="resolved", since=back)), 300,
             "AcmNoHealthyEngine resolved at on-call")
    resolved, _ = alerts_at(cluster, namespace, "on-call", "AcmNoHealthyEngine",
                            status="resolved", since=back)[0]
    print(f"AcmNoHealthyEngine resolved at on-call {resolved - back:.0f} s after the engines "
          "were scaled back")


def test_a_failed_report_run_pages_compliance_and_not_on_call(
        deployed: tuple[Cluster, Rendering]) -> None:
    """A real compliance fault: the daily report's CronJob template, run now for a day that
    holds no call record, is held by the job (exit 1) and the Job fails. The exporter reads the
    failed run from the audit trail: NccReportRunFailed reaches the compliance receiver, and
    the on-call receiver gets nothing of it."""
    cluster, rendering = deployed
    namespace, batch, core = rendering.config.namespace, cluster.batch(), cluster.core()
    job = job_of(batch.read_namespaced_cron_job("ncc-report-daily", namespace),
                 "ncc-report-daily-held")
    job.spec.backoff_limit = 0
    job.spec.template.spec.containers[0].args = ["daily", "--date", "2026-02-02"]
    fault = time.time()
    batch.create_namespaced_job(namespace, job)
    wait_for(lambda: job_ending(cluster, namespace, "ncc-report-daily-held") is not None, 240,
             "the held run's Job ended")
    pod = core.list_namespaced_pod(namespace,
                                   label_selector="job-name=ncc-report-daily-held").items[0]
    log = pod_log(core, pod.metadata.name, namespace)
    assert job_ending(cluster, namespace, "ncc-report-daily-held") == "Failed", log
    assert "daily 2026-02-02: no-data" in log, log
    ended = time.time()
    wait_for(lambda: bool(alerts_at(cluster, namespace, "compliance", "NccReportRunFailed",
                                    since=fault)), 120, "NccReportRunFailed at compliance")
    arrived, alert = alerts_at(cluster, namespace, "compliance", "NccReportRunFailed",
                               since=fault)[0]
    print(f"NccReportRunFailed at compliance {arrived - ended:.0f} s after the Job failed "
          f"({arrived - fault:.0f} s after it was created)")
    assert alert["labels"]["cron_job"] == "ncc-report-daily"
    assert alert["labels"]["area"] == "compliance"
    assert alert["annotations"]["runbook_url"].endswith("/NccReportRunFailed.md")
    assert not alerts_at(cluster, namespace, "on-call", "NccReportRunFailed")


def test_every_opensips_pod_gets_the_receive_buffer_it_asks_for(
        deployed: tuple[Cluster, Rendering]) -> None:
    """This machine's net.core.rmem_max is 4 MiB, what OpenSIPS asks for: every sidecar reports
    the buffer granted equal to the one wanted, so AcmUdpReceiveBufferCapped stays quiet."""
    cluster, rendering = deployed
    namespace = rendering.config.namespace

    def reported() -> list[dict[str, Any]]:
        return prometheus_query(cluster, namespace, "acm_opensips_udp_receive_buffer_bytes "
                                "- acm_opensips_udp_receive_buffer_wanted_bytes")

    wait_for(lambda: len(reported()) >= rendering.config.opensips.autoscaling.min_replicas, 90,
             "every OpenSIPS sidecar scraped")
    assert all(float(r["value"][1]) == 0 for r in reported()), reported()  # type: ignore[index]


def test_no_pod_listens_on_an_open_door(deployed: tuple[Cluster, Rendering],
                                        tmp_path: Path) -> None:
    """Every listening TCP and UDP socket of every pod, found in the pod's own network
    namespace, is SIP, a probe page that reveals nothing, pod-local, or refuses a stranger and
    answers the platform's account (tests/cluster/doors.py)."""
    import base64

    from tests.cluster.doors import Accounts, classify, listening_sockets, pod_pid

    cluster, rendering = deployed
    namespace, core = rendering.config.namespace, cluster.core()
    secrets = {s.metadata.name: {key: base64.b64decode(value).decode()
                                 for key, value in (s.data or {}).items()}
               for s in core.list_namespaced_secret(namespace).items}
    passwords = sorted({data["password"] for data in secrets.values() if "password" in data})
    gossip = secrets.get("alertmanager-gossip", {})
    certificates = []
    if gossip:
        for name, text in gossip.items():
            (tmp_path / name).write_text(text)
        certificates.append((tmp_path / "ca.crt", tmp_path / "tls.crt", tmp_path / "tls.key"))
    accounts = Accounts(
        basic=[(user, password) for user in ("acm-control", "alertmanager")
               for password in passwords],
        store=[(user, password) for user, password in secrets["dragonfly-users"].items()
               if user != "users.acl"],
        database=[(secrets["acm-database"]["username"], secrets["acm-database"]["password"])],
        client_certificates=certificates,
        s3=[(data["access-key-id"], data["secret-access-key"]) for data in secrets.values()
            if "access-key-id" in data])
    verdicts = []
    pods = [p for p in core.list_namespaced_pod(namespace).items
            if p.status.phase == "Running" and p.metadata.deletion_timestamp is None]
    for pod in pods:
        for found in listening_sockets(pod_pid(pod.metadata.uid)):
            verdicts.append((pod.metadata.name,
                             classify(found, pod.status.pod_ip, pod, accounts)))
    table = "\n".join(f"{name:45} {v.socket.protocol} {v.socket.address}:{v.socket.port} "
                      f"({v.socket.process}) {v.kind}: {v.detail}" for name, v in verdicts)
    print(table)
    assert not [v for _, v in verdicts if v.open], table
    # It looked at every pod, and met each kind of socket the platform has.
    assert {name for name, _ in verdicts} == {p.metadata.name for p in pods}, table
    assert {"sip", "refuses", "probe"} <= {v.kind for _, v in verdicts}, table
