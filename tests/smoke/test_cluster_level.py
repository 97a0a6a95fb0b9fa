"""Through the Kubernetes API: workloads at their configured replicas and on the rendered config,
Services with ready endpoints, HPAs and PDBs with the configured numbers, CronJobs on Lagos time
whose last run succeeded recently enough."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes import client as kube_client
from kubernetes.client.exceptions import ApiException

from components.base.kube import CONFIG_HASH_ANNOTATION
from tests.smoke.plan import Cluster, CronJobCheck, SmokePlan, Workload, section


@pytest.fixture(scope="session")
def cluster(plan: SmokePlan) -> Cluster:
    return section(plan.cluster, "cluster")


@pytest.fixture(scope="session")
def api(cluster: Cluster) -> kube_client.ApiClient:
    from kubernetes import config as kube_config

    return kube_config.new_client_from_config(config_file=cluster.kubeconfig,
                                              context=cluster.context)


def read(call: Any, *args: Any) -> Any:
    try:
        return call(*args)
    except ApiException as error:
        if error.status == 404:
            pytest.fail(f"{args[0]} does not exist in namespace {args[-1]}")
        raise


def test_workload_is_available(workload: Workload, cluster: Cluster,
                               api: kube_client.ApiClient) -> None:
    apps = kube_client.AppsV1Api(api)
    if workload.kind == "Deployment":
        live = read(apps.read_namespaced_deployment, workload.name, cluster.namespace)
        serving = live.status.available_replicas or 0
    else:
        live = read(apps.read_namespaced_stateful_set, workload.name, cluster.namespace)
        serving = live.status.ready_replicas or 0
    desired = live.spec.replicas or 0
    assert desired >= workload.min_replicas, (
        f"{workload.kind} {workload.name} wants {desired} replicas, configured "
        f"{workload.min_replicas}")
    assert serving == desired, (
        f"{workload.kind} {workload.name}: {serving} of {desired} replicas available")


def test_workload_runs_the_rendered_config(configured_workload: Workload, cluster: Cluster,
                                           api: kube_client.ApiClient) -> None:
    workload = configured_workload
    selector = ",".join(f"{k}={v}" for k, v in sorted(workload.selector.items()))
    pods = kube_client.CoreV1Api(api).list_namespaced_pod(
        cluster.namespace, label_selector=selector).items
    running = [p for p in pods if p.metadata.deletion_timestamp is None]
    assert running, f"{workload.name}: no pods"
    stale = sorted(
        f"{p.metadata.name} ({(p.metadata.annotations or {}).get(CONFIG_HASH_ANNOTATION)})"
        for p in running
        if (p.metadata.annotations or {}).get(CONFIG_HASH_ANNOTATION) != workload.config_hash)
    assert not stale, (f"{workload.name}: pods on another config than the rendered "
                       f"{workload.config_hash}: {', '.join(stale)}")


def test_service_has_ready_endpoints(service: str, cluster: Cluster,
                                     api: kube_client.ApiClient) -> None:
    read(kube_client.CoreV1Api(api).read_namespaced_service, service, cluster.namespace)
    slices = kube_client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
        cluster.namespace, label_selector=f"kubernetes.io/service-name={service}").items
    ready = [address
             for endpoint_slice in slices for endpoint in endpoint_slice.endpoints or []
             if endpoint.conditions is None or endpoint.conditions.ready is not False
             for address in endpoint.addresses]
    assert ready, f"Service {service} has no ready endpoint"


def test_autoscalers_as_configured(cluster: Cluster, api: kube_client.ApiClient) -> None:
    autoscaling = kube_client.AutoscalingV2Api(api)
    problems = []
    for expected in cluster.autoscalers:
        live = read(autoscaling.read_namespaced_horizontal_pod_autoscaler, expected.name,
                    cluster.namespace)
        found = (live.spec.scale_target_ref.name, live.spec.min_replicas, live.spec.max_replicas)
        wanted = (expected.target, expected.min_replicas, expected.max_replicas)
        if found != wanted:
            problems.append(f"HPA {expected.name}: target, min, max {found}, configured {wanted}")
        elif (live.status.current_replicas or 0) < expected.min_replicas:
            problems.append(f"HPA {expected.name}: {live.status.current_replicas} replicas, "
                            f"below its floor {expected.min_replicas}")
    assert not problems, "; ".join(problems)


def test_disruption_budgets_as_configured(cluster: Cluster, api: kube_client.ApiClient) -> None:
    policy = kube_client.PolicyV1Api(api)
    problems = []
    for expected in cluster.budgets:
        live = read(policy.read_namespaced_pod_disruption_budget, expected.name,
                    cluster.namespace)
        if (live.spec.min_available, live.spec.max_unavailable) != (
                expected.min_available, expected.max_unavailable):
            problems.append(f"PDB {expected.name}: minAvailable {live.spec.min_available} and "
                            f"maxUnavailable {live.spec.max_unavailable}, configured "
                            f"{expected.min_available} and {expected.max_unavailable}")
        elif (live.status.current_healthy or 0) < (live.status.desired_healthy or 0):
            problems.append(f"PDB {expected.name}: {live.status.current_healthy} healthy, "
                            f"needs {live.status.desired_healthy}")
    assert not problems, "; ".join(problems)


def test_cron_job_is_scheduled_and_its_last_run_succeeded(
    cron_job: CronJobCheck, cluster: Cluster, api: kube_client.ApiClient
) -> None:
    batch = kube_client.BatchV1Api(api)
    live = read(batch.read_namespaced_cron_job, cron_job.name, cluster.namespace)
    assert (live.spec.schedule, live.spec.time_zone) == (cron_job.schedule, cron_job.time_zone), (
        f"CronJob {cron_job.name} runs {live.spec.schedule!r} in {live.spec.time_zone}, "
        f"configured {cron_job.schedule!r} in {cron_job.time_zone}")
    assert not live.spec.suspend, f"CronJob {cron_job.name} is suspended"

    jobs = [job for job in batch.list_namespaced_job(cluster.namespace).items
            if any(owner.kind == "CronJob" and owner.name == cron_job.name
                   for owner in job.metadata.owner_references or [])]
    finished = sorted((job for job in jobs if _outcome(job) is not None),
                      key=lambda job: job.metadata.creation_timestamp)
    if finished and _outcome(finished[-1]) == "Failed":
        last = finished[-1]
        reason = next(c.message or c.reason for c in last.status.conditions
                      if c.type == "Failed" and c.status == "True")
        pytest.fail(f"CronJob {cron_job.name}: the last run, Job {last.metadata.name}, "
                    f"failed: {reason}")

    now = datetime.now(UTC)
    last_success = live.status.last_successful_time if live.status else None
    if last_success is None:
        # A CronJob younger than one period has not been due yet.
        age = (now - live.metadata.creation_timestamp).total_seconds()
        assert age <= cron_job.max_age_seconds, (
            f"CronJob {cron_job.name} has never succeeded in {age:.0f} s "
            f"(a run is due every {cron_job.max_age_seconds} s at most)")
        return
    age = (now - last_success).total_seconds()
    assert age <= cron_job.max_age_seconds, (
        f"CronJob {cron_job.name}: last success {last_success:%Y-%m-%d %H:%M:%S} UTC is "
        f"{age:.0f} s old, more than {cron_job.max_age_seconds} s")


def _outcome(job: Any) -> str | None:
    for condition in (job.status.conditions or []) if job.status else []:
        if condition.type in ("Complete", "Failed") and condition.status == "True":
            return str(condition.type)
    return None
