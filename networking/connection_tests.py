""" "Test connection": run the probe in the project's namespace and say what it found.

The worker advances a ``ConnectionTest`` one step at a time (``advance``), never waiting inside
a task: it starts the probe pod, then looks again every second until the probe has finished
or the deadline has passed, reads the probe's report from the pod's termination message,
counts the Service's ready endpoints, and turns all of it into findings in plain words
(``diagnose``): the commonest reasons a private hostname does not answer are a service with
no ready pod, an app that does not listen on the port, an app that listens on 127.0.0.1 only,
and a policy that drops the caller.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from networking.cluster import probe
from networking.cluster.backend_choice import get_backend
from networking.cluster.errors import ClusterError
from networking.models import ConnectionTest, Project

logger = logging.getLogger(__name__)

Status = ConnectionTest.Status
# How often the worker looks at a running probe.
POLL_SECONDS = 1.0
# A probe not finished this long after it started is given up (the pod's own deadline, plus
# time to schedule it and pull its image).
GIVE_UP_AFTER = timedelta(seconds=probe.DEADLINE_SECONDS + 30)
# Waiting reasons that mean the probe will never start.
CANNOT_START = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
)


@dataclass(frozen=True)
class Step:
    status: str
    # Seconds until the worker should look again; None when the test is finished.
    look_again_in: float | None = None


def _finish(test: ConnectionTest, status: str, **fields: Any) -> Step:
    """Record the outcome, once: a duplicate delivery finds the test finished already."""
    updated = ConnectionTest.objects.filter(pk=test.pk, status__in=ConnectionTest.UNFINISHED)
    if updated.update(status=status, finished_at=timezone.now(), **fields):
        Project.touch([test.service.project_id])  # the open pages refresh themselves
    return Step(status)


def advance(test_id: int) -> Step:
    """One step of a test: start the probe, look at it, or record what it found."""
    test = ConnectionTest.objects.select_related("service__project").filter(pk=test_id).first()
    if test is None or test.finished:
        return Step(test.status if test else "gone")
    project = test.service.project
    backend = get_backend()
    name = probe.pod_name(test.pk)
    try:
        if test.status == Status.QUEUED:
            pod = probe.probe_pod(
                namespace=project.namespace,
                project_uid=project.uid,
                test_id=test.pk,
                hostname=test.hostname,
                ports=list(test.ports),
                settings=probe.ProbeSettings(
                    settings.CONNECTION_TEST_IMAGE, settings.CONNECTION_TEST_PULL_POLICY
                ),
            )
            backend.start_probe(pod)
            ConnectionTest.objects.filter(pk=test.pk, status=Status.QUEUED).update(
                status=Status.RUNNING, pod_name=name, started_at=timezone.now()
            )
            return Step(Status.RUNNING, POLL_SECONDS)
        outcome = backend.probe_outcome(project.namespace, name)
        if outcome is None:
            return _finish(
                test, Status.ERROR, error="The probe pod was deleted before it finished."
            )
        if not outcome.finished:
            return _still_running(test, outcome)
        endpoints = backend.ready_endpoints(project.namespace, test.service.name)
    except ClusterError as error:
        if error.transient and not _overdue(test):
            return Step(test.status, POLL_SECONDS * 2)
        logger.warning("Connection test %s could not run: %s", test.pk, error.for_log)
        return _finish(test, Status.ERROR, error=_customer_message(error))
    _delete_quietly(backend, project.namespace, name)
    try:
        report = json.loads(outcome.message)
    except ValueError:
        logger.warning("Connection test %s: the probe wrote no report (%r)", test.pk, outcome)
        return _finish(
            test, Status.ERROR, error="The probe stopped without a report. Try again in a moment."
        )
    findings = diagnose(test, report, endpoints)
    passed = all(finding["ok"] for finding in findings)
    return _finish(
        test, Status.PASSED if passed else Status.FAILED, report=report, findings=findings
    )


def _overdue(test: ConnectionTest) -> bool:
    started = test.started_at or test.created_at
    return timezone.now() - started > GIVE_UP_AFTER


def _still_running(test: ConnectionTest, outcome: probe.PodOutcome) -> Step:
    if outcome.waiting_reason in CANNOT_START or _overdue(test):
        logger.warning(
            "Connection test %s: the probe (%s) did not run: %s",
            test.pk,
            settings.CONNECTION_TEST_IMAGE,
            outcome.waiting_reason,
        )
        _delete_quietly(get_backend(), test.service.project.namespace, probe.pod_name(test.pk))
        return _finish(
            test,
            Status.ERROR,
            error=(
                f"The connection probe could not run ({outcome.waiting_reason}). Try again in a "
                "few minutes; if it keeps failing, contact support."
            ),
        )
    return Step(Status.RUNNING, POLL_SECONDS)


def _delete_quietly(backend: Any, namespace: str, name: str) -> None:
    try:
        backend.delete_probe(namespace, name)
    except ClusterError as error:  # a finished probe pod left behind harms nothing
        logger.warning(
            "Could not delete the connection probe %s/%s: %s", namespace, name, error.for_log
        )


def _customer_message(error: ClusterError) -> str:
    from networking.cluster.manifests import NO_CLUSTER

    if str(error) == NO_CLUSTER:
        return NO_CLUSTER
    return (
        "The connection probe could not be started in the cluster. Try again in a few minutes; "
        "if it keeps failing, contact support."
    )


def _ms(value: Any) -> str:
    return f"{float(value or 0):.1f} ms"


def diagnose(
    test: ConnectionTest, report: dict[str, Any], endpoints: probe.ReadyEndpoints
) -> list[dict[str, Any]]:
    """What the probe met, each finding ``{"ok": bool, "text": str}`` in plain words."""
    hostname, service = test.hostname, test.service.name
    dns = report.get("dns") or {}
    addresses = [str(address) for address in dns.get("addresses") or []]
    findings: list[dict[str, Any]] = []
    if addresses:
        shown = ", ".join(addresses)
        if test.expected_ip and test.expected_ip not in addresses:
            findings.append(
                {
                    "ok": False,
                    "text": f"{hostname} resolved to {shown}, not to the ClusterIP the dashboard "
                    f"shows ({test.expected_ip}). The cluster has changed the address since: "
                    "wait until the project is in sync, then test again.",
                }
            )
        else:
            findings.append(
                {
                    "ok": True,
                    "text": f"{hostname} resolved to {shown} in {_ms(dns.get('ms'))}.",
                }
            )
    elif dns.get("not_found"):
        findings.append(
            {
                "ok": False,
                "text": f"{hostname} does not resolve in this project. If the service is new, "
                "wait until the project is in sync and test again; if it is, the cluster's DNS "
                "lacks the .internal rule: contact support.",
            }
        )
    else:
        findings.append(
            {
                "ok": False,
                "text": f"The cluster's DNS did not answer for {hostname} "
                f"({dns.get('error') or 'no answer'}). Try again in a moment.",
            }
        )
    for result in report.get("ports") or []:
        port, outcome = result.get("port"), result.get("outcome")
        if outcome == "connected":
            text = f"Port {port}: connected in {_ms(result.get('ms'))}."
            findings.append({"ok": True, "text": text})
            continue
        if outcome == "skipped":
            text = f"Port {port}: not tried, since {hostname} did not resolve."
        elif endpoints.ready == 0:
            # Whatever the packet met (a refusal, silence, no route), the cause is the same.
            waiting = f" ({endpoints.not_ready} not ready yet)" if endpoints.not_ready else ""
            text = (
                f"Port {port}: no answer, because no pod of {service} is ready{waiting}. Either "
                f"{service} has no running workload yet (deploy it), or its pods are not ready: "
                "check that they start, and that their readiness check passes."
            )
        elif outcome == "refused":
            text = (
                f"Port {port}: refused by {service}'s pods: nothing accepts connections on that "
                f"port. Check that your app listens on port {port}, and on every address "
                "(0.0.0.0 or ::), not on 127.0.0.1 or localhost only."
            )
        elif outcome == "timeout":
            text = (
                f"Port {port}: no answer within {probe.STEP_TIMEOUT_SECONDS} s. Packets are "
                "dropped on the way: usually a network policy that does not admit the caller (the "
                "project's own pods are always admitted; a policy added by hand may not be), or "
                "an app too busy to accept connections."
            )
        elif outcome == "unreachable":
            text = (
                f"Port {port}: the cluster has no route to {result.get('address')}. If the "
                "service was just created or changed, wait until the project is in sync and "
                "test again."
            )
        else:
            text = f"Port {port}: {result.get('error') or 'the connection failed'}."
        findings.append({"ok": False, "text": text})
    return findings


def latest(service_id: int) -> ConnectionTest | None:
    """The service's most recent test, if any."""
    return ConnectionTest.objects.filter(service_id=service_id).first()
