"""Faults on the deployed local platform while calls flow, and what each one cost.

Each scenario starts a steady load (`tests/cluster/load.py`) through HAProxy's NodePort, does
one thing to the platform while the calls flow, waits for the platform to be whole again and
returns the load's count with what it observed. The tests (`test_ha_under_load.py`) assert
each scenario's goal at a modest rate; `benchmarks/ha_faults.py` runs the same scenarios at a
higher one and prints the table.
"""

from __future__ import annotations

import base64
import csv
import io
import re
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pulumi import automation as auto

from components.opensips.config_files import exported_metric
from stacks.pod_logs import pod_log
from stacks.render import Rendering
from tests.cluster.kube import Cluster, job_of, pod_exec, readiness
from tests.cluster.load import LoadResult, SteadyLoad
from tests.conftest import REPO
from tests.engine import stack_document, write_stack_document
from tests.sip.lab import basic_authorization

STACK = "local"
NODE = REPO / "scripts" / "node"


@dataclass
class Outcome:
    scenario: str
    load: LoadResult
    notes: dict[str, Any] = field(default_factory=dict)

    def row(self) -> str:
        return self.load.row(self.scenario)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s: {what}"
        time.sleep(1)


@dataclass
class Platform:
    """The deployed `local` stack: the cluster, its rendering, the Pulumi stack."""

    stack: auto.Stack
    cluster: Cluster
    rendering: Rendering

    @property
    def namespace(self) -> str:
        return self.rendering.config.namespace

    def sip_port(self) -> int:
        live = self.cluster.core().read_namespaced_service("haproxy-sip", self.namespace)
        return int(next(p.node_port for p in live.spec.ports if p.name == "sip-tcp"))

    def pods(self, name: str) -> list[Any]:
        return [p for p in self.cluster.core().list_namespaced_pod(
            self.namespace, label_selector=f"app.kubernetes.io/name={name}").items
            if p.status.phase == "Running" and p.metadata.deletion_timestamp is None]

    def whole(self) -> bool:
        return all(s.ready for s in readiness(self.cluster, self.rendering))

    def password(self, secret: str) -> str:
        data = self.cluster.core().read_namespaced_secret(secret, self.namespace).data
        return base64.b64decode(data["password"]).decode()

    def get(self, url: str, secret: str) -> str:
        request = urllib.request.Request(
            url, headers={"Authorization": basic_authorization(self.password(secret))})
        with urllib.request.urlopen(request, timeout=5) as answer:
            return str(answer.read().decode())

    def opensips_statistic(self, statistic: str) -> int:
        """A statistic summed over the running OpenSIPS pods (their metrics, with the account)."""
        name, port, total = exported_metric(statistic), self.rendering.config.opensips.ports.http, 0
        for pod in self.pods("opensips"):
            text = self.get(f"http://{pod.status.pod_ip}:{port}/metrics", "opensips-control")
            total += sum(int(float(line.split()[1])) for line in text.splitlines()
                         if line.startswith(f"{name} "))
        return total

    def haproxy_servers_up(self) -> dict[str, int]:
        """Per HAProxy pod, how many OpenSIPS servers of the SIP backend are UP."""
        port, up = self.rendering.config.haproxy.ports.stats, {}
        for pod in self.pods("haproxy"):
            text = self.get(f"http://{pod.status.pod_ip}:{port}/stats;csv", "haproxy-control")
            rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
            up[pod.metadata.name] = sum(
                1 for row in rows if row["pxname"] == "opensips_sip_tcp"
                and row["svname"] not in ("FRONTEND", "BACKEND") and row["status"] == "UP")
        return up

    def kill(self, pod: Any, container: str) -> None:
        """SIGKILL to the container's process, as a crash would end it (not a pod deletion)."""
        status = next(s for s in pod.status.container_statuses if s.name == container)
        container_id = status.container_id.split("://", 1)[1]
        subprocess.run([NODE, "ctr", "tasks", "kill", "--signal", "SIGKILL", container_id],
                       check=True, capture_output=True, timeout=30)

    def restarts(self, name: str, container: str) -> int:
        return sum(s.restart_count for p in self.pods(name)
                   for s in p.status.container_statuses or [] if s.name == container)

    def redis(self, *command: str) -> str:
        """A command to the breaker store as OpenSIPS's user (the default user is off)."""
        import base64

        from components.opensips.config_files import STORE_USER

        core = self.cluster.core()
        password = base64.b64decode(core.read_namespaced_secret(
            "dragonfly-users", self.namespace).data[STORE_USER]).decode()
        pod = self.pods("dragonfly")[0]
        return pod_exec(core, pod.metadata.name, self.namespace,
                        ["redis-cli", "-p", str(self.rendering.config.dragonfly.port),
                         "--user", STORE_USER, "--pass", password, "--no-auth-warning",
                         *command], container="dragonfly").strip()


# HAProxy's tcplog line: ... Tw/Tc/Tt bytes <termination state> actconn/...; the state's first
# letter says who ended the session ("C" the client, "S" the server, "-" a normal close).
HAPROXY_SESSION = re.compile(r" -?\d+/-?\d+/\+?\d+ \+?\d+ (?P<ending>\S\S) ")


def connection_endings(platform: Platform, seconds: float) -> dict[str, Any]:
    """How the last `seconds` of connections ended, as the HAProxy pods logged them, and what
    OpenSIPS complained about meanwhile: which side closed a failed call's connection."""
    from kubernetes.client.exceptions import ApiException

    core, since = platform.cluster.core(), int(seconds) + 1

    def log_of(pod: Any, container: str) -> str:
        # A container restarting just now has no log to give: say so instead of failing.
        try:
            return pod_log(core, pod.metadata.name, platform.namespace,
                           container=container, since_seconds=since)
        except ApiException as error:
            return f"ERROR: no log from {pod.metadata.name}: {error.reason}"

    endings: Counter[str] = Counter()
    unusual: list[str] = []
    for pod in platform.pods("haproxy"):
        for line in log_of(pod, "haproxy").splitlines():
            session = HAPROXY_SESSION.search(line)
            if session is None:
                continue
            endings[session["ending"]] += 1
            if session["ending"] not in ("--", "CD") and len(unusual) < 5:
                unusual.append(line)
    complaints = [line for pod in platform.pods("opensips")
                  for line in log_of(pod, "opensips").splitlines()
                  if "ERROR" in line or "CRITICAL" in line][:10]
    return {"haproxy_endings": dict(endings), "haproxy_unusual": unusual,
            "opensips_errors": complaints}


def rollout(platform: Platform, work: Path, rate: int, seconds: int, part: str) -> Outcome:
    """A config change to `part` ("opensips" or "haproxy") applied with `pulumi up` while calls
    flow: every pod of the part is replaced. The stack is put back afterwards (no load)."""
    work.mkdir(parents=True, exist_ok=True)
    document = stack_document(STACK)
    settings = document["config"][f"acm-platform:{part}"]
    if part == "opensips":
        settings["dispatcherProbeSeconds"] = \
            platform.rendering.config.opensips.dispatcher_probe_seconds + 1
    else:
        settings["healthCheck"] = {"interSeconds": 7}
    changed = write_stack_document(document, work / f"Pulumi.{STACK}.yaml")
    before = {p.metadata.name for p in platform.pods(part)}
    load = SteadyLoad(platform.sip_port(), rate, rate * seconds, work / "load")
    try:
        time.sleep(5)
        started = time.monotonic()
        result = platform.stack.up(config_file=str(changed), on_output=lambda _: None)
        assert result.summary.result == "succeeded"
        rolled = time.monotonic() - started
        outcome = load.result()
        endings = connection_endings(platform, load.running_for()) if outcome.failed else {}
    finally:
        if load.process.poll() is None:
            load.process.kill()
    after = {p.metadata.name for p in platform.pods(part)}
    restored = platform.stack.up(on_output=lambda _: None)
    assert restored.summary.result == "succeeded"
    wait_for(platform.whole, 180, "the stack back to its own config")
    return Outcome(f"{part} rollout (pulumi up)", outcome,
                   {"replaced": not (before & after), "rollout_seconds": round(rolled),
                    **endings})


def kill_container(platform: Platform, work: Path, rate: int, seconds: int, part: str,
                   container: str) -> Outcome:
    """One pod's `container` killed (SIGKILL) a third into the load; the kubelet restarts it."""
    victim = sorted(platform.pods(part), key=lambda p: p.metadata.name)[0]
    restarts = platform.restarts(part, container)
    unscreened = platform.opensips_statistic("unscreened_calls")
    load = SteadyLoad(platform.sip_port(), rate, rate * seconds, work / "load")
    try:
        time.sleep(seconds / 3)
        platform.kill(victim, container)
        killed_at = load.running_for()
        outcome = load.result()
        endings = connection_endings(platform, load.running_for()) if outcome.failed else {}
    finally:
        if load.process.poll() is None:
            load.process.kill()
    wait_for(lambda: platform.restarts(part, container) > restarts, 60,
             f"{part}/{container} restarted")
    wait_for(platform.whole, 120, "every workload ready again")
    notes: dict[str, Any] = {"pod": victim.metadata.name, "killed_at_s": round(killed_at, 1),
                             "unscreened": platform.opensips_statistic("unscreened_calls")
                             - unscreened, **endings}
    return Outcome(f"{part}/{container} killed", outcome, notes)


def breaker_keys(platform: Platform) -> dict[str, str]:
    """Each breaker key's value ("" when absent), read with OpenSIPS's own commands."""
    return {key: platform.redis("GET", key)
            for key in ("acm:breaker:open", "acm:breaker:half_open", "acm:breaker:failures")}


def breaker_answers_again(platform: Platform, work: Path) -> bool:
    """The breaker store back in use: OPEN set by hand in Dragonfly, the next calls go out
    unscreened (counted by OpenSIPS); then cleared."""
    before = platform.opensips_statistic("unscreened_calls")
    platform.redis("SET", "acm:breaker:half_open", "1")
    platform.redis("SET", "acm:breaker:open", "1", "EX", "60")
    # Every OpenSIPS reads the breaker's state from the store once a second (its timer route).
    time.sleep(2)
    try:
        result = SteadyLoad(platform.sip_port(), 10, 20, work / "breaker-load").result()
    finally:
        platform.redis("DEL", "acm:breaker:open", "acm:breaker:half_open")
    return result.failed == 0 and platform.opensips_statistic("unscreened_calls") >= before + 20


def run_report_job(platform: Platform, name: str, secret: dict[str, str],
                   environment: dict[str, str], arguments: list[str] | None = None) -> None:
    """The daily report's CronJob template started now (as `kubectl create job --from` does),
    with its credentials Secret and some variables replaced: where a test serves the
    regulator's SFTP and API. `secret` holds the files that differ from the deployed Secret."""
    from kubernetes import client as kube_client

    from components.compliance import SECRET_NAME

    core, batch, namespace = platform.cluster.core(), platform.cluster.batch(), platform.namespace
    deployed = core.read_namespaced_secret(SECRET_NAME, namespace).data
    core.create_namespaced_secret(namespace, kube_client.V1Secret(
        metadata=kube_client.V1ObjectMeta(name=name, namespace=namespace),
        data={**deployed, **{key: base64.b64encode(value.encode()).decode()
                             for key, value in secret.items()}}))
    job = job_of(batch.read_namespaced_cron_job("ncc-report-daily", namespace), name)
    pod = job.spec.template.spec
    for volume in pod.volumes:
        if volume.secret is not None and volume.secret.secret_name == SECRET_NAME:
            volume.secret.secret_name = name
    container = pod.containers[0]
    container.env = [variable for variable in container.env
                     if variable.name not in environment] + [
        kube_client.V1EnvVar(name=key, value=value) for key, value in environment.items()]
    if arguments is not None:
        container.args = arguments
    batch.create_namespaced_job(namespace, job)


def job_pods(platform: Platform, name: str) -> list[tuple[int | None, str]]:
    """Each pod the Job ran, oldest first: its exit code and its log."""
    core = platform.cluster.core()
    pods = sorted(core.list_namespaced_pod(platform.namespace,
                                           label_selector=f"job-name={name}").items,
                  key=lambda p: p.metadata.creation_timestamp)
    runs = []
    for pod in pods:
        state = pod.status.container_statuses[0].state
        code = state.terminated.exit_code if state.terminated else None
        runs.append((code, pod_log(core, pod.metadata.name, platform.namespace)))
    return runs


def database_query(platform: Platform, query: str) -> list[str]:
    """Rows of `query` in the platform's database, read in the database stand-in's pod with
    the account of its mounted Secret."""
    return database_rows(platform.cluster, platform.namespace, query)


def database_rows(cluster: Cluster, namespace: str, query: str) -> list[str]:
    [pod] = [p for p in cluster.core().list_namespaced_pod(
        namespace, label_selector="app.kubernetes.io/name=yb-tserver").items
        if p.status.phase == "Running" and p.metadata.deletion_timestamp is None][:1]
    script = ('PGPASSWORD=$(cat /etc/acm/database/password) psql -h /tmp -p "$ACM_DATABASE_PORT"'
              ' -U "$(cat /etc/acm/database/username)" -d acm -v ON_ERROR_STOP=1 -Atc "$1"')
    output = pod_exec(cluster.core(), pod.metadata.name, namespace,
                      ["sh", "-c", script, "query", query], container="yb-tserver")
    return [line for line in output.splitlines() if line.strip()]


# One call at noon WAT yesterday (the database's clock): the day the report jobs file next
# holds traffic, as a production day does (a day without a call record is held, not filed).
A_CALL_YESTERDAY = (
    "INSERT INTO acm.call_records VALUES (900001, ((now() AT TIME ZONE 'Africa/Lagos')::date"
    " - 1 + time '12:00') AT TIME ZONE 'Africa/Lagos', '08030000000', '08039999999', 25)"
    " ON CONFLICT DO NOTHING RETURNING call_id")
