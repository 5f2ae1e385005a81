"""Mutual TLS between a project's services: turning it on, who may call whom, issuing and
renewing certificates, and rotating the project's CA without refusing a request.

The rows (``networking.models.identity``) are the truth; a pass (``networking.passes``) asks
``material`` for the project's TLS files, which issues whatever is missing or due first, and
writes them to the cluster as one Secret, ``stackblaze-tls``, each workload mounting its own
files at ``/var/run/stackblaze/tls``. One Secret per project rather than one per service: RBAC
can name it (``deploy/rbac.yaml``), so the worker still may read no Secret but the two it owns
in each namespace; a Secret per service would need every Secret of every namespace. Its cost is
a size limit (a Kubernetes object is at most 1 MiB, about 600 services' files): a project with
mutual TLS has at most ``MTLS_MAX_SERVICES`` services.

A CA rotation reuses the shared secrets' protocol (``networking.rotation``), with the kubelet's
refresh of mounted files in place of a rollout: trust the new CA beside the old, then issue
every certificate from the new one, then stop trusting the old; each phase moves on once a pass
has applied it and ``MTLS_PROPAGATION_SECONDS`` have passed for every pod's files to follow.
Nothing restarts, so nothing is refused.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from django.conf import settings
from django.db import transaction
from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Length
from django.utils import timezone

from networking import identity, naming
from networking.cluster.desired import ServiceCertificateSpec, TLSSpec
from networking.crypto import SecretText
from networking.models import (
    AuditEvent,
    CertificateAuthority,
    MutualTLS,
    Project,
    Service,
    ServiceAlias,
    ServiceCertificate,
    actor_label,
)

# What ``accept.txt`` says for "every service of the project".
EVERY_SERVICE = "*"


class MTLSRefused(Exception):
    """A mutual TLS change cannot be made; ``str()`` says why, for the user."""


def lifetime() -> dt.timedelta:
    return dt.timedelta(hours=settings.MTLS_CERTIFICATE_HOURS)


def project_identity(project_uid: str) -> str:
    """The SPIFFE ID of every service of the project (``accept.txt``'s wildcard line)."""
    return identity.spiffe_id(project_uid, EVERY_SERVICE)


# -- turning it on ---------------------------------------------------------------------------


def enable(project: Project, *, actor: Any) -> bool:
    """Give the project its CA; the next pass issues every service its certificate and mounts
    it. False if it was on already (a second click, or another owner's meanwhile)."""
    with transaction.atomic():
        Project.objects.select_for_update().only("pk").get(pk=project.pk)
        if MutualTLS.objects.filter(project=project).exists():
            return False
        count = project.services.count()
        if count > settings.MTLS_MAX_SERVICES:
            raise MTLSRefused(
                f"Mutual TLS is available for projects of up to {settings.MTLS_MAX_SERVICES} "
                f"services; this one has {count}. Split it into projects, or contact support."
            )
        size = projected_size(project)
        if size > SECRET_BUDGET:
            raise MTLSRefused(
                f"This project's mutual TLS files would take {size // 1024} KiB, more than the "
                f"{SECRET_BUDGET // 1024} KiB one Kubernetes Secret holds: its services name "
                "too many callers. Let more of them accept every service, then turn it on."
            )
        _new_authority(project, 1, timezone.now())
        # The project's row lock above serializes enables: the one-to-one row cannot clash.
        MutualTLS.objects.create(
            project=project,
            enabled_by=actor if actor is not None and actor.is_authenticated else None,
            enabled_by_label=actor_label(actor),
        )
        project.record_change(
            actor=actor,
            action=AuditEvent.Action.MTLS_ENABLED,
            target=project.name,
            details={"certificate_hours": settings.MTLS_CERTIFICATE_HOURS},
        )
    return True


def state_of(project: Project) -> MutualTLS | None:
    return MutualTLS.objects.filter(project=project).first()


# -- who may call whom -----------------------------------------------------------------------


def set_callers(
    service: Service,
    *,
    any_caller: bool,
    callers: Iterable[Service],
    actor: Any,
    expected: str | None = None,
) -> bool:
    """Which services' certificates ``service`` accepts calls from: every service of the
    project (``any_caller``) or those listed (services of other projects, or gone, are not).
    False if nothing changed.

    ``MTLSRefused`` for a list that names no service (every call would be refused), for one
    that would take the project's files past their Secret's size, and, with ``expected`` (the
    ``callers_version`` a form was drawn from), when someone changed it meanwhile: saving
    would undo their change unseen."""
    wanted = {caller.pk for caller in callers}
    with transaction.atomic():
        # The project first, as every change does (a rename locks it, then the service).
        project = Project.objects.select_for_update().get(pk=service.project_id)
        locked = Service.objects.select_for_update().get(pk=service.pk)
        if expected is not None and expected != callers_version(locked):
            raise MTLSRefused(
                f"Someone changed who may call {locked.name} meanwhile. Here is what it is "
                "now: choose again."
            )
        chosen = (
            []
            if any_caller
            else list(
                Service.objects.select_for_update()
                .filter(project_id=project.pk, pk__in=sorted(wanted))
                .order_by("name")
            )
        )
        if not any_caller and not chosen:
            raise MTLSRefused(
                f"Choose the services that may call {locked.name}, or every service of the "
                "project: with none, every call to it would be refused."
            )
        before = (
            locked.accepts_any_caller,
            set(locked.accepts_calls_from.values_list("pk", flat=True)),
        )
        after = (any_caller, {caller.pk for caller in chosen})
        if before == after:
            return False
        if not any_caller:
            # Checked with mutual TLS off too: turning it on must not meet a list too long.
            size = projected_size(project, {locked.pk: [caller.name for caller in chosen]})
            if size > SECRET_BUDGET:
                raise MTLSRefused(
                    f"{locked.name} cannot accept {len(chosen)} named callers: the project's "
                    f"mutual TLS files would take {size // 1024} KiB, more than the "
                    f"{SECRET_BUDGET // 1024} KiB one Kubernetes Secret holds. Accept every "
                    "service of the project, or name fewer."
                )
        locked.accepts_any_caller = any_caller
        locked.save(update_fields=["accepts_any_caller", "updated_at"])
        locked.accepts_calls_from.set(chosen)
        project.record_change(
            actor=actor,
            action=AuditEvent.Action.MTLS_CALLERS_CHANGED,
            target=locked.name,
            details={
                "callers": "every service" if any_caller else [caller.name for caller in chosen]
            },
        )
    service.refresh_from_db()
    return True


def callers_version(service: Service) -> str:
    """A short digest of who may call ``service`` now: a form carries the one it was drawn
    from, so a save never undoes another owner's change unseen (``set_callers``)."""
    callers = sorted(service.accepts_calls_from.values_list("pk", flat=True))
    text = f"{service.accepts_any_caller}:{callers}"
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def callers_of(services: Sequence[Service]) -> dict[int, list[str]]:
    """The names each service (by id) accepts calls from; absent: every service."""
    found: dict[int, list[str]] = {
        service.pk: [] for service in services if not service.accepts_any_caller
    }
    through = Service.accepts_calls_from.through
    rows = through.objects.filter(from_service_id__in=list(found)).values_list(
        "from_service_id", "to_service__name"
    )
    for callee, caller in rows.order_by("to_service__name"):
        found[callee].append(caller)
    return found


def _accept_files(
    project: Project, names: dict[int, str], aliases: dict[str, tuple[str, ...]]
) -> dict[int, str]:
    """``accept.txt`` of each service, by id: one SPIFFE ID a line (read under the project's
    lock, so a service's restriction is never lost to a rename meanwhile)."""
    restricted = list(
        Service.objects.filter(project=project, accepts_any_caller=False).only(
            "name", "accepts_any_caller"
        )
    )
    every = f"# Every service of this project.\n{project_identity(project.uid)}\n"
    files = dict.fromkeys(names, every)
    listed = callers_of(restricted)
    for service in restricted:
        files[service.pk] = accept_file(project.uid, listed[service.pk], aliases)
    return files


def accept_file(
    project_uid: str, callers: Iterable[str], aliases: dict[str, tuple[str, ...]]
) -> str:
    """A restricted service's ``accept.txt``: its callers, and the old names they may still
    present while their certificates are renewed under the new one."""
    lines = ["# The services allowed to call this one (and old names they may still have)."]
    for caller in callers:
        lines.extend(
            identity.spiffe_id(project_uid, each) for each in (caller, *aliases.get(caller, ()))
        )
    return "\n".join(lines) + "\n"


# The most the files may take in their Secret (a Kubernetes object is at most 1 MiB; the rest
# is its metadata and the keys' names).
SECRET_BUDGET = 1_000_000
# A service's certificate and key as issued (EC P-256: the key's PEM is 241 bytes; a
# certificate about 700 bytes plus its names), for one not issued yet.
_NEW_CERTIFICATE_BYTES = 1100
_KEY_BYTES = 241


def _encoded(size: int) -> int:
    """Bytes of ``size`` bytes once base64-encoded, as a Secret's data holds them."""
    return 4 * -(-size // 3)


def projected_size(project: Project, overrides: dict[int, list[str]] | None = None) -> int:
    """About how many bytes the project's mutual TLS Secret takes, with the named services'
    callers replaced by ``overrides`` (id -> caller names). No key is decrypted."""
    services = dict(project.services.values_list("pk", "name"))
    lengths = dict(
        ServiceCertificate.objects.filter(service__project=project)
        .annotate(length=Length("certificate"))
        .values_list("service_id", "length")
    )
    bundle = sum(
        len(certificate)
        for certificate in CertificateAuthority.objects.filter(
            project=project, retired_at__isnull=True
        ).values_list("certificate", flat=True)
    )
    aliases: dict[str, tuple[str, ...]] = {}
    for owner, alias in ServiceAlias.objects.filter(project=project).values_list(
        "service__name", "name"
    ):
        aliases[owner] = (*aliases.get(owner, ()), alias)
    accept = _accept_files(project, services, aliases)
    for pk, callers in (overrides or {}).items():
        accept[pk] = accept_file(project.uid, callers, aliases)
    total = _encoded(bundle)
    for pk, name in services.items():
        total += _encoded(lengths.get(pk, _NEW_CERTIFICATE_BYTES)) + _encoded(_KEY_BYTES)
        total += _encoded(len(accept[pk].encode())) + 3 * len(name) + 30
    return total


# -- issuing ---------------------------------------------------------------------------------


def _signing(authorities: list[CertificateAuthority], state: MutualTLS) -> CertificateAuthority:
    """The CA that signs now: the newest, except while services only learn to trust it."""
    if state.rotation_phase == MutualTLS.Phase.TRUST_NEW and len(authorities) > 1:
        return authorities[-2]
    return authorities[-1]


def _bundle(
    authorities: list[CertificateAuthority], rotation: Planned | None
) -> list[CertificateAuthority]:
    """The CAs every pod trusts: those not retired, but the newest alone once the old are
    being retired (they stay "trusted" on the record until that has reached every pod)."""
    if rotation is not None and rotation.phase == MutualTLS.Phase.RETIRE_OLD:
        return authorities[-1:]
    return authorities


def _hostnames(name: str, aliases: dict[str, tuple[str, ...]]) -> list[str]:
    return [naming.internal_hostname(each) for each in (name, *aliases.get(name, ()))]


@dataclass(frozen=True)
class Planned:
    """The CA rotation phase a pass applied, to move it on once applied (``after_apply``)."""

    phase: str
    started_at: dt.datetime | None

    @classmethod
    def of(cls, state: MutualTLS) -> Planned | None:
        """The phase ``state`` is in; None while no rotation runs."""
        return cls(state.rotation_phase, state.phase_started_at) if state.rotating else None


def material(
    project: Project,
    names: dict[int, str],
    aliases: dict[str, tuple[str, ...]],
    *,
    now: dt.datetime | None = None,
) -> TLSSpec | None:
    """The project's TLS files for its services (``names``: each service's name by id), after
    issuing what is due (``for_pass``). None if the project has no mutual TLS."""
    return for_pass(project, names, aliases, now=now)[0]


def for_pass(
    project: Project,
    names: dict[int, str],
    aliases: dict[str, tuple[str, ...]],
    *,
    now: dt.datetime | None = None,
) -> tuple[TLSSpec | None, Planned | None]:
    """A pass's TLS files, and the CA rotation phase they are the files of (to move it on once
    applied: ``after_apply``), read together under the project's lock.

    First every certificate is issued that is missing, names other hostnames than the service
    has (``aliases``: its old names still resolving), is signed by a CA that no longer signs,
    or is due for renewal. ``names`` are the services as the pass read them: one deleted since
    is left out (its pass follows), one renamed since keeps the name the pass builds with."""
    now = now or timezone.now()
    with transaction.atomic():
        # The project first, as every change does; then its services, so that none is deleted
        # under a certificate being written for it.
        Project.objects.select_for_update().only("pk").get(pk=project.pk)
        state = MutualTLS.objects.select_for_update().filter(project=project).first()
        if state is None:
            return None, None
        present = set(
            Service.objects.select_for_update()
            .filter(project=project, pk__in=list(names))
            .values_list("pk", flat=True)
        )
        names = {pk: name for pk, name in names.items() if pk in present}
        authorities = list(
            CertificateAuthority.objects.filter(project=project, retired_at__isnull=True).order_by(
                "generation"
            )
        )
        signing = _signing(authorities, state)
        current = {
            row.service_id: row
            for row in ServiceCertificate.objects.filter(service_id__in=list(names))
        }
        ca: identity.Issued | None = None
        for pk, name in names.items():
            hostnames = _hostnames(name, aliases)
            row = current.get(pk)
            if (
                row is not None
                and row.authority_id == signing.pk
                and row.hostnames == hostnames
                and now < row.renew_after
                and identity.identity_of(row.certificate) == (project.uid, name)
            ):
                continue
            if ca is None:
                assert signing.key is not None
                ca = identity.Issued(signing.certificate, signing.key.reveal())
            issued = identity.issue(
                ca,
                project_uid=project.uid,
                service_name=name,
                hostnames=hostnames,
                now=now,
                lifetime=lifetime(),
                old_names=aliases.get(name, ()),
            )
            current[pk] = _store(pk, signing, hostnames, issued, now)
        accept = _accept_files(project, names, aliases)
        rotation = Planned.of(state)
    bundle = identity.trust_bundle(
        authority.certificate for authority in _bundle(authorities, rotation)
    )
    files = {}
    for pk, name in names.items():
        key = current[pk].key
        assert key is not None  # the column is never empty
        files[name] = ServiceCertificateSpec(current[pk].certificate, key.reveal(), accept[pk])
    return TLSSpec(bundle=bundle, services=files), rotation


def _store(
    service_id: int,
    authority: CertificateAuthority,
    hostnames: list[str],
    issued: identity.Issued,
    now: dt.datetime,
) -> ServiceCertificate:
    certificate = x509.load_pem_x509_certificate(issued.certificate_pem.encode())
    start, end = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    row, _ = ServiceCertificate.objects.update_or_create(
        service_id=service_id,
        defaults={
            "authority": authority,
            "certificate": issued.certificate_pem,
            "key": SecretText.seal(issued.key_pem),
            "hostnames": hostnames,
            "serial": format(certificate.serial_number, "x"),
            "not_before": start,
            "not_after": end,
            "renew_after": start + (end - start) * identity.RENEW_AFTER,
            "issued_at": now,
        },
    )
    return row


def shape(project: Project, names: Iterable[str]) -> TLSSpec | None:
    """The files' shape without their contents: what the watcher compares workloads with."""
    if not MutualTLS.objects.filter(project=project).exists():
        return None
    empty = ServiceCertificateSpec("", "", "")
    return TLSSpec(bundle="", services=dict.fromkeys(names, empty))


def planned(project: Project) -> Planned | None:
    state = (
        MutualTLS.objects.filter(project=project).only("rotation_phase", "phase_started_at").first()
    )
    return Planned.of(state) if state is not None else None


# -- renewing --------------------------------------------------------------------------------


def renew_due(now: dt.datetime | None = None) -> int:
    """Ask a pass of every project with a certificate due for renewal (the pass renews it);
    how many projects. A project with a pass already due is left to it."""
    now = now or timezone.now()
    due = (
        ServiceCertificate.objects.filter(renew_after__lte=now)
        .values("service__project_id")
        .annotate(count=Count("pk"))
    )
    asked = 0
    for row in due:
        with transaction.atomic():
            project = (
                Project.objects.select_for_update().filter(pk=row["service__project_id"]).first()
            )
            if project is None:
                continue
            if project.applied_generation < project.generation:
                continue  # a pass is due anyway: it renews them
            project.record_change(
                actor=None,
                action=AuditEvent.Action.MTLS_RENEWED,
                target=project.name,
                details={"certificates": row["count"]},
            )
            asked += 1
    return asked


# -- rotating the CA -------------------------------------------------------------------------

# A CA lives a year (``identity.CA_LIFETIME``); beat rotates it this long before it expires.
ROTATE_CA_BEFORE = dt.timedelta(days=30)


def _new_authority(project: Project, generation: int, now: dt.datetime) -> CertificateAuthority:
    ca = identity.new_ca(project.uid, now=now, generation=generation)
    certificate = x509.load_pem_x509_certificate(ca.certificate_pem.encode())
    return CertificateAuthority.objects.create(
        project=project,
        generation=generation,
        certificate=ca.certificate_pem,
        key=SecretText.seal(ca.key_pem),
        not_after=certificate.not_valid_after_utc,
    )


def rotate_expiring(now: dt.datetime | None = None) -> int:
    """Start a CA rotation in every project whose newest CA expires within
    ``ROTATE_CA_BEFORE``; how many. Nobody has to remember a yearly chore."""
    now = now or timezone.now()
    newest = CertificateAuthority.objects.filter(project=OuterRef("project")).order_by(
        "-generation"
    )
    due = (
        MutualTLS.objects.filter(rotation_phase="")
        .annotate(expires=Subquery(newest.values("not_after")[:1]))
        .filter(expires__lte=now + ROTATE_CA_BEFORE)
        .select_related("project")
    )
    started = 0
    for state in due:
        try:
            start_ca_rotation(state.project, actor=None)
        except MTLSRefused:
            continue  # started meanwhile
        started += 1
    return started


def start_ca_rotation(project: Project, *, actor: Any) -> int:
    """A new CA, trusted beside the old one first (the pass that follows writes the bundle of
    both); the new CA's generation. Refused while another rotation runs."""
    now = timezone.now()
    with transaction.atomic():
        Project.objects.select_for_update().only("pk").get(pk=project.pk)
        state = MutualTLS.objects.select_for_update().filter(project=project).first()
        if state is None:
            raise MTLSRefused("Mutual TLS is off for this project: turn it on first.")
        if state.rotating:
            raise MTLSRefused(
                f"The CA is already being rotated ({state.get_rotation_phase_display()}). "
                "Wait for that rotation to finish before starting another."
            )
        latest = (
            CertificateAuthority.objects.filter(project=project).order_by("-generation").first()
        )
        generation = (latest.generation if latest is not None else 0) + 1
        _new_authority(project, generation, now)
        state.rotation_phase = MutualTLS.Phase.TRUST_NEW
        state.phase_started_at = now
        state.phase_applied_at = None
        state.save(update_fields=["rotation_phase", "phase_started_at", "phase_applied_at"])
        project.record_change(
            actor=actor,
            action=AuditEvent.Action.CA_ROTATION_STARTED,
            target=project.name,
            details={"generation": generation},
        )
    return generation


def after_apply(
    project: Project, applied: Planned, *, now: dt.datetime | None = None
) -> float | None:
    """A pass applied the files of rotation phase ``applied``: when the kubelet has had time
    to put them in every pod, move on to the next phase. When to look again, or None."""
    now = now or timezone.now()
    with transaction.atomic():
        Project.objects.select_for_update().only("pk").get(pk=project.pk)
        state = MutualTLS.objects.select_for_update().filter(project=project).first()
        if (
            state is None
            or state.rotation_phase != applied.phase
            or state.phase_started_at != applied.started_at
        ):
            return None  # moved on meanwhile: the pass of the new phase judges it
        if state.phase_applied_at is None:
            state.phase_applied_at = now
            state.save(update_fields=["phase_applied_at"])
            Project.touch([project.pk])
        wait = (
            state.phase_applied_at + dt.timedelta(seconds=settings.MTLS_PROPAGATION_SECONDS) - now
        ).total_seconds()
        if wait > 0:
            return wait + 0.5
        _advance(project, state, now)
    return None


def _older(project: Project) -> Any:
    """The project's CAs still trusted somewhere, but the newest."""
    newest = CertificateAuthority.objects.filter(project=project).order_by("-generation").first()
    assert newest is not None
    return CertificateAuthority.objects.filter(
        project=project, retired_at__isnull=True, generation__lt=newest.generation
    )


def _advance(project: Project, state: MutualTLS, now: dt.datetime) -> None:
    phase = state.rotation_phase
    if phase == MutualTLS.Phase.TRUST_NEW:
        state.rotation_phase = MutualTLS.Phase.ISSUE_NEW
    elif phase == MutualTLS.Phase.ISSUE_NEW:
        # Every pod presents a certificate of the new CA now: the old one leaves the bundle
        # (``_bundle``), and its key, which nothing may sign with again, is destroyed.
        _older(project).update(key=None)
        state.rotation_phase = MutualTLS.Phase.RETIRE_OLD
    else:
        # The bundle without it has reached every pod: nobody trusts it any more.
        _older(project).update(retired_at=now)
        state.rotation_phase = ""
        state.last_rotated_at = now
    state.phase_started_at = now if state.rotation_phase else None
    state.phase_applied_at = None
    state.save(
        update_fields=["rotation_phase", "phase_started_at", "phase_applied_at", "last_rotated_at"]
    )
    project.record_change(
        actor=None,
        action=(
            AuditEvent.Action.CA_ROTATION_PHASE
            if state.rotation_phase
            else AuditEvent.Action.CA_ROTATION_COMPLETED
        ),
        target=project.name,
        details={"phase": state.rotation_phase or "completed"},
    )


# -- what pages, the API and the CLI show ----------------------------------------------------


PHASE_STEPS = (
    (
        MutualTLS.Phase.TRUST_NEW,
        "Trust the new CA",
        "Every service's ca.pem holds both CAs: certificates of either are accepted.",
    ),
    (
        MutualTLS.Phase.ISSUE_NEW,
        "Issue from the new CA",
        "Every service gets a certificate signed by the new CA, in place: nothing restarts.",
    ),
    (
        MutualTLS.Phase.RETIRE_OLD,
        "Retire the old CA",
        "Nobody presents a certificate of the old CA any more: it leaves every ca.pem, and its "
        "key is destroyed.",
    ),
)


@dataclass(frozen=True)
class CertificateView:
    """A service's certificate as shown: public facts only."""

    service: str
    identity: str
    hostnames: list[str]
    authority: int
    serial: str
    not_after: dt.datetime
    renew_after: dt.datetime
    issued_at: dt.datetime


def certificates(project: Project) -> list[CertificateView]:
    rows = (
        ServiceCertificate.objects.filter(service__project=project)
        .select_related("service", "authority")
        .defer("key", "certificate", "authority__key", "authority__certificate")
        .order_by("service__name")
    )
    return [
        CertificateView(
            service=row.service.name,
            identity=identity.spiffe_id(project.uid, row.service.name),
            hostnames=list(row.hostnames),
            authority=row.authority.generation,
            serial=row.serial,
            not_after=row.not_after,
            renew_after=row.renew_after,
            issued_at=row.issued_at,
        )
        for row in rows
    ]


def authorities(project: Project) -> list[CertificateAuthority]:
    return list(
        CertificateAuthority.objects.filter(project=project).defer("key").order_by("generation")
    )


def authority_roles(project: Project, state: MutualTLS) -> dict[int, str]:
    """What each of the project's CAs (by generation) is now: ``signing``; ``next`` (trusted,
    signs from the next phase); ``trusted`` (no longer signs, still in every ca.pem);
    ``leaving`` (being taken out of every ca.pem); ``retired``."""
    current = list(
        CertificateAuthority.objects.filter(project=project, retired_at__isnull=True)
        .only("generation")
        .order_by("generation")
    )
    rotation = Planned.of(state)
    signing = _signing(current, state).generation if current else None
    bundle = {authority.generation for authority in _bundle(current, rotation)}
    roles = {}
    for generation, retired_at in CertificateAuthority.objects.filter(project=project).values_list(
        "generation", "retired_at"
    ):
        if retired_at is not None:
            roles[generation] = "retired"
        elif generation == signing:
            roles[generation] = "signing"
        elif generation not in bundle:
            roles[generation] = "leaving"
        elif signing is not None and generation > signing:
            roles[generation] = "next"
        else:
            roles[generation] = "trusted"
    return roles


def services_without_certificate(project: Project) -> int:
    return project.services.filter(certificate__isnull=True).count()
