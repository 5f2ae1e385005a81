"""deploy/rbac.yaml, applied to a test API server for its "worker" user.

The ServiceAccount becomes the token-file user the tests run the worker as (the admission
policy's condition names that user instead of the service account), and the probe image the
policy allows is the one the test cluster built.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import yaml

from tests.kubeapi import TestAPIServer

RBAC = Path(__file__).resolve().parent.parent / "deploy" / "rbac.yaml"
SERVICE_ACCOUNT = "system:serviceaccount:stackblaze-system:stackblaze-networking-worker"

PATHS = {
    "ServiceAccount": "/api/v1/namespaces/{namespace}/serviceaccounts",
    "ConfigMap": "/api/v1/namespaces/{namespace}/configmaps",
    "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
    "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
    "ValidatingAdmissionPolicy": (
        "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies"
    ),
    "ValidatingAdmissionPolicyBinding": (
        "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings"
    ),
}


def documents() -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(RBAC.read_text()) if document]


def for_user(user: str, probe_image: str) -> list[dict[str, Any]]:
    """The documents as they apply to ``user`` (a token-file user, not the ServiceAccount)."""
    found = []
    for document in copy.deepcopy(documents()):
        kind = document["kind"]
        if kind == "ClusterRoleBinding":
            document["subjects"] = [
                {"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}
            ]
        elif kind == "ValidatingAdmissionPolicy":
            for condition in document["spec"]["matchConditions"]:
                assert SERVICE_ACCOUNT in condition["expression"]
                condition["expression"] = f'request.userInfo.username == "{user}"'
        elif kind == "ConfigMap":
            document["data"]["image"] = probe_image
        found.append(document)
    return found


def apply(api: TestAPIServer, user: str, probe_image: str) -> None:
    """Create every document of deploy/rbac.yaml (its namespace first) for ``user``."""
    status, body = api.request(
        "POST", "/api/v1/namespaces", {"metadata": {"name": "stackblaze-system"}}
    )
    assert status in (201, 409), body
    for document in for_user(user, probe_image):
        path = PATHS[document["kind"]].format(namespace=document["metadata"].get("namespace"))
        status, body = api.request("POST", path, document)
        assert status == 201, (document["kind"], body)
    wait_effective(api, user)


def wait_effective(api: TestAPIServer, user: str, timeout: float = 30) -> None:
    """Until the admission policy refuses ``user`` a pod that is not the probe: the API server
    loads a new policy a moment after it is created. Asked with a dry run: nothing is made."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "policy-check", "labels": {"app": "not-the-probe"}},
        "spec": {"containers": [{"name": "c", "image": "not-the-probe"}]},
    }
    path = "/api/v1/namespaces/stackblaze-system/pods?dryRun=All"
    deadline = time.monotonic() + timeout
    while True:
        status, body = api.request("POST", path, pod, user=user)
        if status in (403, 422) and b"connection-test" in body:
            return
        assert time.monotonic() < deadline, f"the admission policy never took effect: {body!r}"
        time.sleep(0.2)


def remove(api: TestAPIServer) -> None:
    for document in reversed(documents()):
        path = PATHS[document["kind"]].format(namespace=document["metadata"].get("namespace"))
        api.request("DELETE", f"{path}/{document['metadata']['name']}")
