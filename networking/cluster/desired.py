"""The desired Kubernetes objects of a project: a pure function of its database rows.

No I/O happens here, so the whole mapping from rows to manifests is testable on its own. The
backends (``networking.cluster.backends``) make the cluster match what this returns.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

KubeObject = dict[str, Any]

# The record key of what we own on a service's workloads (objects are keyed "Kind/name").
WORKLOAD_RECORD = "Workload"
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "stackblaze-networking"
PROJECT_LABEL = "networking.stackblaze.cloud/project"
SERVICE_LABEL = "networking.stackblaze.cloud/service"
# On a Service kept under a renamed service's old name: the service it now reaches.
ALIAS_OF_LABEL = "networking.stackblaze.cloud/alias-of"
# Set by Kubernetes (1.22 and newer) on every namespace, to the namespace's name; no tenant can
# change it. Peering and ingress policies match namespaces on it.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"

ISOLATION_POLICY = "project-isolation"
INGRESS_POLICY = "allow-ingress-controller"
SHARED_SECRETS = "stackblaze-shared-secrets"
# On a workload's pod template: the versions of the shared secrets it receives. Changing it is
# what restarts the workload's pods, so they pick up the Secret's new contents.
SECRETS_ANNOTATION = "networking.stackblaze.cloud/shared-secrets"
# The same for the reference variables it receives (another service's address).
REFERENCES_ANNOTATION = "networking.stackblaze.cloud/references"
# Mutual TLS: every service's certificate, key and "accept calls from" list, and the project's
# trust bundle, in one Secret of a fixed name (so RBAC can name it, as it names the shared
# secrets'), each workload mounting its own four files at ``TLS_MOUNT_PATH``. The kubelet
# refreshes a mounted Secret in place: a renewal or a CA rotation restarts nothing.
TLS_SECRET = "stackblaze-tls"
TLS_VOLUME = "stackblaze-tls"
TLS_MOUNT_PATH = "/var/run/stackblaze/tls"
TLS_BUNDLE_KEY = "ca.pem"

# Apply order: a namespace before what lives in it, the Secret before workloads refer to it.
KINDS = ("Namespace", "Secret", "Service", "NetworkPolicy")
WORKLOAD_KINDS = ("Deployment", "StatefulSet")


class ServiceSpec(NamedTuple):
    """What the builder needs of a ``networking.models.Service`` row.

    A named tuple, not a dataclass: a pass builds one per service (a thousand at a time), and
    equal specs hash equal, so equal services share their built object (see below).
    """

    name: str
    kind: str
    ports: tuple[int, ...]
    public: bool = False
    # Old names still resolving after renames (``ServiceAlias``): a Service each.
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class SecretSpec:
    """A shared secret: its environment variables now, its version, who receives it."""

    name: str
    environment: dict[str, str]
    version: int
    receivers: frozenset[str]
    # (variable, optional) for every variable a receiving workload references.
    references: tuple[tuple[str, bool], ...]


@dataclass(frozen=True)
class ReferenceSpec:
    """A reference variable: ``consumer`` gets ``variable`` set to ``value``.

    ``version`` changes when the value does (a keyed digest of it, made by the caller: the
    value is a connection string with its password), and restarts the consumer's workload.
    """

    consumer: str
    variable: str
    value: str
    version: str

    @property
    def key(self) -> str:
        """Its key in the project's Secret: never a valid variable name, so never a clash."""
        return f"ref.{self.consumer}.{self.variable}"


@dataclass(frozen=True)
class ServiceCertificateSpec:
    """A service's mutual TLS files: its certificate, its key, who it accepts calls from (one
    SPIFFE ID a line, ``…/service/*`` for every service of the project)."""

    certificate: str
    key: str = field(repr=False)  # private: never in a log line or an error's text
    accept: str = ""


@dataclass(frozen=True)
class TLSSpec:
    """A project's mutual TLS: the CAs its services trust, and each service's files."""

    bundle: str
    services: dict[str, ServiceCertificateSpec]

    def fingerprint(self, key: bytes) -> str:
        """A keyed digest of all of it (the keys included): what a worker keeps between
        passes instead of the keys themselves."""
        text = _ENCODE(
            [
                self.bundle,
                sorted(
                    (name, list(spec.__dict__.values())) for name, spec in self.services.items()
                ),
            ]
        )
        return hashlib.blake2b(text.encode(), digest_size=16, key=key).hexdigest()


def tls_items(service: str) -> tuple[tuple[str, str], ...]:
    """(key in the project's TLS Secret, file name in the pod) of a service's files."""
    return (
        (f"{service}.cert.pem", "cert.pem"),
        (f"{service}.key.pem", "key.pem"),
        (TLS_BUNDLE_KEY, "ca.pem"),
        (f"{service}.accept.txt", "accept.txt"),
    )


@dataclass(frozen=True)
class WorkloadSpec:
    """What we own on a service's workload: two pod-template annotations, env references and
    the mutual TLS volume.

    ``annotation``: the shared secrets' versions (None: the service receives none);
    ``references``: the versions of the reference variables it receives (None: none);
    ``tls``: the service whose certificate files the workload mounts (None: no mutual TLS).
    With all None we own nothing there.
    """

    annotation: str | None = None
    env: tuple[KubeObject, ...] = ()
    references: str | None = None
    tls: str | None = None

    @property
    def owned(self) -> bool:
        return self.annotation is not None or self.references is not None or self.tls is not None

    def tls_volume(self) -> KubeObject | None:
        if self.tls is None:
            return None
        return {
            "name": TLS_VOLUME,
            "secret": {
                "secretName": TLS_SECRET,
                "items": [{"key": key, "path": path} for key, path in tls_items(self.tls)],
            },
        }

    def tls_mount(self) -> KubeObject | None:
        if self.tls is None:
            return None
        return {"name": TLS_VOLUME, "mountPath": TLS_MOUNT_PATH, "readOnly": True}


class ClusterSettings(NamedTuple):
    """Cluster-wide conventions, from Django settings."""

    workload_label: str = "stackblaze.cloud/service"
    ingress_namespace: str = "ingress-nginx"


@dataclass
class DesiredState:
    """Everything one project should have in the cluster, keyed by (kind, name).

    Objects may be shared with other desired states (see ``_service_object``): read them,
    never change one in place.
    """

    namespace: str
    objects: dict[tuple[str, str], KubeObject] = field(default_factory=dict)
    # Service name -> what we own on its workload, for every service of the project.
    workloads: dict[str, WorkloadSpec] = field(default_factory=dict)
    # Objects already encoded for their digest, by (kind, name).
    encoded: dict[tuple[str, str], str] = field(default_factory=dict, repr=False, compare=False)

    def add(self, obj: KubeObject, encoded: str | None = None) -> None:
        key = (obj["kind"], obj["metadata"]["name"])
        self.objects[key] = obj
        if encoded is not None:
            self.encoded[key] = encoded

    def of_kind(self, kind: str) -> dict[str, KubeObject]:
        return {name: obj for (k, name), obj in self.objects.items() if k == kind}

    def digests(self, key: bytes, only: Collection[str] | None = None) -> dict[str, str]:
        """A digest of every object, and of what we own on each workload, by record key.

        What a pass records having applied, so the next one can tell what changed without
        reading the cluster. Keyed with a secret ``key``: the Secret's object holds values, and
        an unkeyed digest of a short one could be matched by guessing. The builder always
        inserts fields in the same order, so equal objects encode equally.

        ``only``: just these record keys (those the state does not hold are left out).
        """
        if only is not None:
            found = {}
            for record in only:
                kind, name = record_key(record)
                if kind == WORKLOAD_RECORD:
                    spec = self.workloads.get(name)
                    if spec is not None and spec.owned:
                        found[record] = _workload_digest(spec, key)
                elif (obj := self.objects.get((kind, name))) is not None:
                    found[record] = _digest(self.encoded.get((kind, name)) or _ENCODE(obj), key)
            return found
        encoded = self.encoded
        found = {
            f"{kind}/{name}": _digest(encoded.get((kind, name)) or _ENCODE(obj), key)
            for (kind, name), obj in self.objects.items()
        }
        for service, spec in self.workloads.items():
            if spec.owned:
                found[f"{WORKLOAD_RECORD}/{service}"] = _workload_digest(spec, key)
        return found


def _workload_digest(spec: WorkloadSpec, key: bytes) -> str:
    owned: list[Any] = [spec.annotation, spec.env]
    if spec.references is not None:  # records made before references stay valid
        owned.append(spec.references)
    if spec.tls is not None:  # and those made before mutual TLS
        owned.append(["tls", spec.tls])
    return _digest(_ENCODE(owned), key)


def record_key(key: str) -> tuple[str, str]:
    """(kind, name) of a record key."""
    kind, _, name = key.partition("/")
    return kind, name


@dataclass(frozen=True)
class Changes:
    """How a desired state differs from the record of the last pass, by (kind, name)."""

    created: frozenset[tuple[str, str]]
    updated: frozenset[tuple[str, str]]
    removed: frozenset[tuple[str, str]]

    def __bool__(self) -> bool:
        return bool(self.created or self.updated or self.removed)

    @property
    def workloads(self) -> bool:
        """Whether what we own on some workload changed."""
        return any(
            kind == WORKLOAD_RECORD for kind, _ in self.created | self.updated | self.removed
        )


def changes_since(previous: dict[str, str], digests: dict[str, str]) -> Changes:
    """What differs between the last pass's record and the digests of the desired state."""
    return Changes(
        created=frozenset(record_key(key) for key in digests.keys() - previous.keys()),
        updated=frozenset(
            record_key(key)
            for key, digest in digests.items()
            if key in previous and previous[key] != digest
        ),
        removed=frozenset(record_key(key) for key in previous.keys() - digests.keys()),
    )


@functools.lru_cache(maxsize=2 * 16384)
def _digest(text: str, key: bytes) -> str:
    """Cached: the builder hands out the same encoded text for an unchanged service (its
    hash is kept with the string), so a pass digests only what changed."""
    return hashlib.blake2b(text.encode(), digest_size=12, key=key).hexdigest()


def managed_labels(project_uid: str, **extra: str) -> dict[str, str]:
    return {MANAGED_BY_LABEL: MANAGED_BY, PROJECT_LABEL: project_uid, **extra}


def managed_selector() -> str:
    """Label selector for listing every object this app manages."""
    return f"{MANAGED_BY_LABEL}={MANAGED_BY}"


def namespace_object(namespace: str, project_uid: str) -> KubeObject:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": namespace,
            "labels": managed_labels(project_uid),
        },
    }


def service_object(
    namespace: str, project_uid: str, service: ServiceSpec, settings: ClusterSettings
) -> KubeObject:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service.name,
            "namespace": namespace,
            "labels": managed_labels(project_uid, **{SERVICE_LABEL: service.name}),
        },
        "spec": {
            "type": "ClusterIP",
            "selector": {settings.workload_label: service.name},
            "ports": [
                {"name": f"tcp-{port}", "port": port, "targetPort": port, "protocol": "TCP"}
                for port in service.ports
            ],
        },
    }


def alias_object(
    namespace: str, project_uid: str, alias: str, service: ServiceSpec, settings: ClusterSettings
) -> KubeObject:
    """A renamed service's old name: its own ClusterIP Service, selecting the same pods on the
    same ports, so ``<old>.internal`` keeps working. Policies select pods, not Services: an
    alias changes nothing they admit."""
    obj = service_object(namespace, project_uid, service, settings)
    obj["metadata"]["name"] = alias
    obj["metadata"]["labels"] = managed_labels(
        project_uid, **{SERVICE_LABEL: alias, ALIAS_OF_LABEL: service.name}
    )
    return obj


def isolation_policy(namespace: str, project_uid: str) -> KubeObject:
    """Every pod in the namespace accepts traffic from its own namespace only."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": ISOLATION_POLICY,
            "namespace": namespace,
            "labels": managed_labels(project_uid),
        },
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {}}]}],
        },
    }


def ingress_policy(
    namespace: str, project_uid: str, public_services: list[str], settings: ClusterSettings
) -> KubeObject:
    """Public web services also accept traffic from the ingress controller's namespace."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": INGRESS_POLICY,
            "namespace": namespace,
            "labels": managed_labels(project_uid),
        },
        "spec": {
            "podSelector": {
                "matchExpressions": [
                    {
                        "key": settings.workload_label,
                        "operator": "In",
                        "values": sorted(public_services),
                    }
                ]
            },
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {NAMESPACE_NAME_LABEL: settings.ingress_namespace}
                            }
                        }
                    ]
                }
            ],
        },
    }


def peer_policy(namespace: str, project_uid: str, peer_namespace: str) -> KubeObject:
    """A peered project's namespace may reach every pod here (VPC peering)."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": f"peer-{peer_namespace}",
            "namespace": namespace,
            "labels": managed_labels(project_uid),
        },
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {NAMESPACE_NAME_LABEL: peer_namespace}
                            }
                        }
                    ]
                }
            ],
        },
    }


def secret_object(
    namespace: str,
    project_uid: str,
    secrets: Sequence[SecretSpec],
    references: Sequence[ReferenceSpec] = (),
) -> KubeObject:
    data = {
        key: base64.b64encode(value.encode()).decode()
        for secret in secrets
        for key, value in sorted(secret.environment.items())
    }
    for reference in sorted(references, key=lambda r: r.key):
        data[reference.key] = base64.b64encode(reference.value.encode()).decode()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": SHARED_SECRETS,
            "namespace": namespace,
            "labels": managed_labels(project_uid),
        },
        "type": "Opaque",
        "data": data,
    }


def tls_secret_object(namespace: str, project_uid: str, tls: TLSSpec) -> KubeObject:
    data = {TLS_BUNDLE_KEY: base64.b64encode(tls.bundle.encode()).decode()}
    for service, spec in sorted(tls.services.items()):
        cert_key, key_key, _, accept_key = (key for key, _ in tls_items(service))
        data[cert_key] = base64.b64encode(spec.certificate.encode()).decode()
        data[key_key] = base64.b64encode(spec.key.encode()).decode()
        data[accept_key] = base64.b64encode(spec.accept.encode()).decode()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": TLS_SECRET,
            "namespace": namespace,
            "labels": managed_labels(project_uid),
        },
        "type": "Opaque",
        "data": data,
    }


NO_WORKLOAD = WorkloadSpec()


def workload_spec(
    service: str,
    secrets: Sequence[SecretSpec],
    references: Sequence[ReferenceSpec] = (),
    tls: TLSSpec | None = None,
) -> WorkloadSpec:
    received = [secret for secret in secrets if service in secret.receivers]
    given = sorted((r for r in references if r.consumer == service), key=lambda r: r.variable)
    mounted = service if tls is not None and service in tls.services else None
    if not received and not given:
        return NO_WORKLOAD if mounted is None else WorkloadSpec(tls=mounted)
    env: list[KubeObject] = []
    for secret in received:
        for variable, optional in secret.references:
            reference: KubeObject = {"name": SHARED_SECRETS, "key": variable}
            if optional:
                reference["optional"] = True
            env.append({"name": variable, "valueFrom": {"secretKeyRef": reference}})
    for item in given:
        env.append(
            {
                "name": item.variable,
                "valueFrom": {"secretKeyRef": {"name": SHARED_SECRETS, "key": item.key}},
            }
        )
    return WorkloadSpec(
        annotation=(
            ",".join(f"{secret.name}={secret.version}" for secret in received) if received else None
        ),
        env=tuple(env),
        references=",".join(f"{r.variable}={r.version}" for r in given) if given else None,
        tls=mounted,
    )


def build_desired_state(
    *,
    namespace: str,
    project_uid: str,
    services: Iterable[ServiceSpec],
    settings: ClusterSettings,
    secrets: Sequence[SecretSpec] = (),
    peer_namespaces: Iterable[str] = (),
    references: Sequence[ReferenceSpec] = (),
    tls: TLSSpec | None = None,
) -> DesiredState:
    desired = DesiredState(namespace=namespace)
    desired.add(namespace_object(namespace, project_uid))
    secrets = sorted(secrets, key=lambda s: s.name)
    if secrets or references:
        desired.add(secret_object(namespace, project_uid, secrets, references))
    if tls is not None:
        desired.add(tls_secret_object(namespace, project_uid, tls))
    public = []
    # The loop a thousand-service pass runs a thousand times: kept to lookups.
    for service in sorted(services, key=_by_name):
        _add_service(desired, project_uid, service, settings, secrets, references, tls)
        if service.public:
            public.append(service.name)
    desired.add(isolation_policy(namespace, project_uid))
    if public and settings.ingress_namespace:
        desired.add(ingress_policy(namespace, project_uid, public, settings))
    for peer_namespace in sorted(set(peer_namespaces)):
        desired.add(peer_policy(namespace, project_uid, peer_namespace))
    return desired


def _add_service(
    desired: DesiredState,
    project_uid: str,
    service: ServiceSpec,
    settings: ClusterSettings,
    secrets: Sequence[SecretSpec],
    references: Sequence[ReferenceSpec],
    tls: TLSSpec | None = None,
) -> None:
    """A service's objects (its Service, one per old name) and what we own on its workload."""
    namespace, objects = desired.namespace, desired.objects
    key = ("Service", service.name)
    objects[key], desired.encoded[key] = _service_object(namespace, project_uid, service, settings)
    for alias in service.aliases:
        objects[("Service", alias)] = alias_object(namespace, project_uid, alias, service, settings)
    desired.workloads[service.name] = (
        workload_spec(service.name, secrets, references, tls)
        if secrets or references or tls is not None
        else NO_WORKLOAD
    )


def patch_desired_state(
    previous: DesiredState,
    *,
    project_uid: str,
    removed: Iterable[ServiceSpec],
    added: Iterable[ServiceSpec],
    public: Collection[str] | None,
    settings: ClusterSettings,
    secrets: Sequence[SecretSpec] = (),
    references: Sequence[ReferenceSpec] = (),
    tls: TLSSpec | None = None,
) -> tuple[DesiredState, set[str]]:
    """``previous`` with the services ``removed`` taken out and ``added`` put in, all else
    (the secrets, references, peers) unchanged: what ``build_desired_state`` would return for
    the services now, without building the others again. ``public``: the public services now
    (None: the same as in ``previous``, whose ingress policy then stands).

    Patched in place and returned, so a change to one service of a thousand costs one
    service's work: the caller gives ``previous`` up. With the record keys of everything
    that may differ from ``previous``.
    """
    desired = previous
    # In the builder's order, whatever order they were read in (a collation's, say).
    secrets = sorted(secrets, key=lambda s: s.name)
    touched: set[str] = set()
    for service in removed:
        for name in (service.name, *service.aliases):
            desired.objects.pop(("Service", name), None)
            desired.encoded.pop(("Service", name), None)
            touched.add(f"Service/{name}")
        desired.workloads.pop(service.name, None)
        touched.add(f"{WORKLOAD_RECORD}/{service.name}")
    for service in added:
        _add_service(desired, project_uid, service, settings, secrets, references, tls)
        touched.update(f"Service/{name}" for name in (service.name, *service.aliases))
        touched.add(f"{WORKLOAD_RECORD}/{service.name}")
    if public is not None:
        key = ("NetworkPolicy", INGRESS_POLICY)
        before = desired.objects.pop(key, None)
        desired.encoded.pop(key, None)
        if public and settings.ingress_namespace:
            desired.add(ingress_policy(desired.namespace, project_uid, list(public), settings))
        if desired.objects.get(key) != before:
            touched.add(f"NetworkPolicy/{INGRESS_POLICY}")
    return desired, touched


def _by_name(service: ServiceSpec) -> str:
    return service.name


# Services recently built, with their encoding: a change to one service of a thousand rebuilds
# and re-encodes that one, not the thousand. Pure inputs, so nothing can go stale; about 1.5 KB
# an entry.
SERVICE_OBJECT_CACHE = 16384


@functools.lru_cache(maxsize=SERVICE_OBJECT_CACHE)
def _service_object(
    namespace: str, project_uid: str, service: ServiceSpec, settings: ClusterSettings
) -> tuple[KubeObject, str]:
    obj = service_object(namespace, project_uid, service, settings)
    return obj, _ENCODE(obj)
