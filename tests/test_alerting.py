"""Alertmanager's rendered config passes the real `amtool check-config` on every stack (and a
broken one fails it), the typed receivers and routes refuse what would route nowhere, every
alert rule has its runbook and every runbook its rule, and Prometheus sends to every replica
with the account Alertmanager asks for."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import bcrypt
import pytest
import yaml

from components.alerting import CONTROL_SECRET, GOSSIP_PORT, alertmanager_binaries
from components.base.credentials import stable_bcrypt
from components.monitoring import alert_names
from stacks.config import StackConfigError, load_stack_config
from stacks.render import Rendering
from tests.conftest import REPO, render_modified, set_path, stack_values

pytestmark = pytest.mark.slow
RUNBOOKS = REPO / "docs" / "runbooks"


def amtool(config: Path) -> subprocess.CompletedProcess[str]:
    binary = Path(alertmanager_binaries()) / "amtool"
    if not binary.is_file():
        pytest.fail(f"{binary} is missing: run scripts/setup (scripts/alertmanager build)")
    return subprocess.run([str(binary), "check-config", str(config)], capture_output=True,
                          text=True, timeout=60)


def test_every_stack_config_passes_amtool(any_stack: Rendering, tmp_path: Path) -> None:
    config = tmp_path / "alertmanager.yml"
    config.write_text(any_stack.rendered_files()["alertmanager.yml"])
    checked = amtool(config)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


def test_amtool_refuses_a_route_to_a_receiver_that_is_not_there(prod: Rendering,
                                                              tmp_path: Path) -> None:
    config = tmp_path / "alertmanager.yml"
    text = prod.rendered_files()["alertmanager.yml"]
    config.write_text(text.replace("- receiver: sip-on-call", "- receiver: sip-on-cal", 1))
    checked = amtool(config)
    assert checked.returncode != 0
    assert "sip-on-cal" in checked.stdout + checked.stderr


def test_routes_send_each_area_to_its_receiver(prod: Rendering) -> None:
    config = yaml.safe_load(prod.rendered_files()["alertmanager.yml"])
    routes = {tuple(r["matchers"]): r for r in config["route"]["routes"]}
    assert routes[('alertname = "Watchdog"',)]["receiver"] == "deadmans-switch"
    compliance = routes[('area = "compliance"',)]
    assert compliance["receiver"] == "compliance-officer"
    assert compliance["group_wait"] == "0s" and compliance["repeat_interval"] == "60m"
    assert routes[('area = "sip-path"', 'severity = "critical"')]["receiver"] == "sip-on-call"
    assert config["route"]["receiver"] == "platform-tickets"
    # The Watchdog route comes first: it is never caught by another route.
    assert config["route"]["routes"][0]["matchers"] == ['alertname = "Watchdog"']
    inhibited = {r["source_matchers"][0]: r["target_matchers"][0] for r in config["inhibit_rules"]}
    assert "AcmCircuitBreakerOpen" in inhibited['alertname = "AcmNoHealthyEngine"']


def test_every_rule_carries_the_label_its_route_matches(prod: Rendering) -> None:
    groups = yaml.safe_load(prod.rendered_files()["alert-rules.yml"])["groups"]
    areas = {g["name"]: {r["labels"]["area"] for r in g["rules"]} for g in groups}
    assert areas == {"acm-call-path": {"sip-path"}, "ncc-compliance": {"compliance"},
                     "platform": {"platform"}}


def test_no_credential_is_in_the_rendered_config(prod: Rendering) -> None:
    text = prod.rendered_files()["alertmanager.yml"]
    # Every credential is a file path under the mounted Secret; no key or password inline.
    assert not re.search(r"^\s*(routing_key|service_key|api_key|auth_password|password):",
                         text, re.M), text
    receivers = prod.get("Secret", "alertmanager-receivers")["stringData"]
    assert sorted(receivers) == ["compliance-pagerduty", "sip-oncall-pagerduty",
                                 "smtp-password", "tickets-webhook"]
    statefulset = prod.get("StatefulSet", "alertmanager")
    volumes = {v["name"]: v for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    projected = volumes["credentials"]["projected"]["sources"]
    assert {s["secret"]["items"][0]["key"] for s in projected} == set(receivers)


def test_production_runs_a_gossiping_cluster_with_a_budget(prod: Rendering) -> None:
    statefulset = prod.get("StatefulSet", "alertmanager")
    assert statefulset["spec"]["replicas"] == 3
    args = statefulset["spec"]["template"]["spec"]["containers"][0]["args"]
    peers = [a for a in args if a.startswith("--cluster.peer=")]
    assert peers == [f"--cluster.peer=alertmanager-{i}.alertmanager-headless.acm.svc.cluster"
                     f".local:{GOSSIP_PORT}" for i in range(3)]
    assert prod.get("PodDisruptionBudget", "alertmanager")["spec"]["maxUnavailable"] == 1
    assert any(a.startswith("--web.config.file=") for a in args)


def test_prometheus_sends_to_every_replica_with_the_account(prod: Rendering) -> None:
    config = yaml.safe_load(prod.rendered_files()["prometheus.yml"])
    (target,) = config["alerting"]["alertmanagers"]
    assert target["dns_sd_configs"][0]["names"] == [
        "alertmanager-headless.acm.svc.cluster.local"]
    password_file = target["basic_auth"]["password_file"]
    prometheus = prod.get("StatefulSet", "prometheus")["spec"]["template"]["spec"]
    sources = next(v for v in prometheus["volumes"] if v["name"] == "credentials")
    mounted = {(s["secret"]["name"], s["secret"]["items"][0]["path"])
               for s in sources["projected"]["sources"]}
    assert (CONTROL_SECRET, Path(password_file).name) in mounted


def test_the_web_password_hash_is_bcrypt_and_stable() -> None:
    key = "a-stack-digest-key-0123456789abcdef"
    first = stable_bcrypt("a-long-control-password", key, "alertmanager-web")
    assert first == stable_bcrypt("a-long-control-password", key, "alertmanager-web")
    assert bcrypt.checkpw(b"a-long-control-password", first.encode())
    assert not bcrypt.checkpw(b"another-password", first.encode())
    assert first != stable_bcrypt("another-long-password", key, "alertmanager-web")
    # Another stack (another key), or another part, salts the same password differently.
    assert first != stable_bcrypt("a-long-control-password", "another-stack-key-0123456789ab",
                                  "alertmanager-web")
    assert first != stable_bcrypt("a-long-control-password", key, "prometheus-web")


def test_a_route_naming_an_unknown_receiver_is_refused() -> None:
    with pytest.raises(StackConfigError) as caught:
        render_modified("prod", "monitoring.alertmanager.routes.onCall", "sip-oncall")
    (path, message), *_ = caught.value.problems
    assert path == "monitoring.alertmanager"
    assert "routes.onCall names 'sip-oncall', which is not a receiver" in message


def test_a_receiver_without_its_secret_is_refused() -> None:
    values, secret_keys = stack_values("prod")
    values["alertmanagerCredentials"] = json.dumps({"compliance-pagerduty": "k",
                                                    "sip-oncall-pagerduty": "k",
                                                    "tickets-webhook": "k"})
    with pytest.raises(StackConfigError) as caught:
        load_stack_config("prod", values, secret_keys)
    assert caught.value.problems == [(
        "monitoring.alertmanager.receivers[0]",
        "receiver 'compliance-officer' needs credential 'smtp-password', which the secret "
        "alertmanagerCredentials does not hold (set it with `pulumi config set --secret "
        "acm-platform:alertmanagerCredentials '{...}'`)")]
    values["alertmanagerCredentials"] = "not json"
    with pytest.raises(StackConfigError) as caught:
        load_stack_config("prod", values, secret_keys)
    assert caught.value.problems[0][0] == "alertmanagerCredentials"
    assert "not json" not in str(caught.value)


def test_prod_without_a_compliance_receiver_is_refused() -> None:
    values, secret_keys = stack_values("prod")
    del values["monitoring"]["alertmanager"]["routes"]["compliance"]
    with pytest.raises(StackConfigError) as caught:
        load_stack_config("prod", values, secret_keys)
    assert "monitoring.alertmanager.routes.compliance is not set" in str(caught.value)
    # A compliance route to a receiver that notifies no one is no better.
    values, secret_keys = stack_values("prod")
    values["monitoring"]["alertmanager"]["receivers"].append({"name": "nobody"})
    set_path(values, "monitoring.alertmanager.routes.compliance", "nobody")
    with pytest.raises(StackConfigError) as caught:
        load_stack_config("prod", values, secret_keys)
    assert "routes.compliance names receiver 'nobody', which notifies no one" in str(
        caught.value)


def test_every_rule_has_its_runbook_and_every_runbook_its_rule(prod: Rendering) -> None:
    groups = yaml.safe_load(prod.rendered_files()["alert-rules.yml"])["groups"]
    rules = {r["alert"]: r for g in groups for r in g["rules"]}
    assert sorted(rules) == sorted(alert_names())
    base = prod.config.monitoring.runbook_base_url
    for alert, rule in rules.items():
        assert rule["annotations"]["runbook_url"] == f"{base}/{alert}.md"
        runbook = RUNBOOKS / f"{alert}.md"
        assert runbook.is_file(), f"{alert} has no runbook {runbook.relative_to(REPO)}"
        text = runbook.read_text()
        assert text.startswith(f"# {alert}\n")
        for section in ("**What it means.**", "**Who is affected.**", "## First three checks",
                        "## Resolve", "## Confirm it resolved"):
            assert section in text, (alert, section)
    orphans = sorted(p.stem for p in RUNBOOKS.glob("*.md") if p.stem not in rules)
    assert orphans == [], f"runbooks without a rule: {orphans}"


def test_local_routes_notify_the_receiver_stand_in_with_its_account(local: Rendering) -> None:
    config = yaml.safe_load(local.rendered_files()["alertmanager.yml"])
    routed = {route["receiver"] for route in config["route"]["routes"]}
    routed.add(config["route"]["receiver"])
    receivers = {r["name"]: r for r in config["receivers"]}
    assert routed == {"on-call", "compliance", "warnings", "watchdog", "platform"}
    for name in routed:
        (webhook,) = receivers[name]["webhook_configs"]
        assert webhook["url"] == ("http://alert-receiver-stand-in.acm-local.svc.cluster.local:"
                                  f"8080/{name}")
        assert webhook["http_config"]["basic_auth"]["username"] == "alertmanager"
        assert webhook["send_resolved"] is True
    # The stand-in asks for the password the webhooks send, from the same secret key.
    stand_in = local.get("Deployment", "alert-receiver-stand-in")["spec"]["template"]["spec"]
    assert "--username" in stand_in["containers"][0]["args"]
    assert local.get("Secret", "alert-receiver-stand-in")["stringData"]["password"] == \
        local.get("Secret", "alertmanager-receivers")["stringData"]["stand-in-webhook"]
    # Alertmanager may reach it (the NetworkPolicy), and only Alertmanager.
    policy = local.get("NetworkPolicy", "flows-alert-receiver-stand-in")["spec"]
    assert [rule["from"] for rule in policy["ingress"]] == [
        [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "alertmanager",
                                          "app.kubernetes.io/instance": "local"}}}]]


def test_a_receiver_stand_in_is_refused_outside_local() -> None:
    values, secret_keys = stack_values("dev")
    values["alertReceiverStandIn"] = stack_values("local")[0]["alertReceiverStandIn"]
    with pytest.raises(StackConfigError) as caught:
        load_stack_config("dev", values, secret_keys)
    assert "alertReceiverStandIn: stand-ins are for the local stack only" in str(caught.value)


def test_a_receiver_stand_in_no_webhook_sends_to_is_refused() -> None:
    with pytest.raises(StackConfigError) as caught:
        render_modified("local", "alertReceiverStandIn.credential", "another-credential")
    (path, message), *_ = caught.value.problems
    assert path == "(stack)"
    assert ("alertReceiverStandIn asks for username 'alertmanager' with credential "
            "'another-credential', which no webhook receiver") in message


def test_replicas_gossip_over_mutual_tls_and_refuse_a_peer_without_the_certificate(
        tmp_path: Path) -> None:
    """Two real Alertmanagers with the cluster TLS config and derived certificates the part
    renders form one cluster; a TLS client without the certificate fails the handshake, one
    with it completes it; nothing listens on UDP for gossip."""
    import contextlib
    import socket
    import ssl
    import time
    import urllib.request

    from components.alerting import GOSSIP_SERVER_NAME, GOSSIP_TLS_FILE, gossip_tls
    from components.base.templating import render

    binary = Path(alertmanager_binaries()) / "alertmanager"
    if not binary.is_file():
        pytest.fail(f"{binary} is missing: run scripts/setup (scripts/alertmanager build)")
    gossip = tmp_path / "gossip"
    gossip.mkdir()
    for name, text in gossip_tls("a-gossip-test-digest-key-0123456789").items():
        (gossip / name).write_text(text)
    (tmp_path / GOSSIP_TLS_FILE).write_text(render(
        "alertmanager-cluster-tls.yml.j2", directory=gossip, server_name=GOSSIP_SERVER_NAME))
    (tmp_path / "alertmanager.yml").write_text(
        "route:\n  receiver: nobody\nreceivers:\n  - name: nobody\n")

    def free() -> int:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return int(probe.getsockname()[1])

    gossip_ports, web_ports = [free(), free()], [free(), free()]
    processes = []
    for index in range(2):
        processes.append(subprocess.Popen([
            str(binary), f"--config.file={tmp_path / 'alertmanager.yml'}",
            f"--storage.path={tmp_path / f'data-{index}'}",
            f"--web.listen-address=127.0.0.1:{web_ports[index]}",
            f"--cluster.listen-address=127.0.0.1:{gossip_ports[index]}",
            f"--cluster.tls-config={tmp_path / GOSSIP_TLS_FILE}",
            *(f"--cluster.peer=127.0.0.1:{port}" for port in gossip_ports)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        def peers(port: int) -> int:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/status",
                                            timeout=2) as answer:
                    return len(json.loads(answer.read())["cluster"]["peers"])
            except OSError:
                return 0

        deadline = time.monotonic() + 60
        while not all(peers(port) == 2 for port in web_ports):
            assert all(p.poll() is None for p in processes), "an Alertmanager stopped"
            assert time.monotonic() < deadline, "the replicas did not form one cluster"
            time.sleep(0.5)

        def handshake(with_certificate: bool) -> bool:
            context = ssl.create_default_context(cafile=str(gossip / "ca.crt"))
            if with_certificate:
                context.load_cert_chain(gossip / "tls.crt", gossip / "tls.key")
            try:
                with socket.create_connection(("127.0.0.1", gossip_ports[0]), timeout=5) as raw, \
                        context.wrap_socket(raw, server_hostname=GOSSIP_SERVER_NAME) as tls:
                    # TLS 1.3 sends the server's verdict on the client after the handshake.
                    tls.settimeout(1)
                    with contextlib.suppress(TimeoutError):
                        tls.recv(1)
                    return True
            except (ssl.SSLError, ConnectionResetError):
                return False

        assert handshake(with_certificate=True)
        assert not handshake(with_certificate=False)
        listening_udp = subprocess.run(["ss", "-Hlun"], capture_output=True, text=True,
                                       check=True).stdout
        assert not any(f":{port} " in listening_udp for port in gossip_ports), listening_udp
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)
