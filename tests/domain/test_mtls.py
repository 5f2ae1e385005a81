"""Mutual TLS as the domain and the pass see it: turning it on, issuing, renewing, who may
call whom, and a CA rotation's phases (``networking/mtls.py``). The packets are in
``tests/dataplane/test_mtls.py``."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from django.core.exceptions import ValidationError
from django.utils import timezone

from networking import identity, mtls
from networking.cluster.desired import TLS_MOUNT_PATH, TLS_SECRET
from networking.models import (
    AuditEvent,
    CertificateAuthority,
    MutualTLS,
    Project,
    Service,
    ServiceCertificate,
)
from networking.passes import reconcile
from tests.conftest import World, make_service, user

pytestmark = pytest.mark.django_db


def _pass(project: Project) -> None:
    assert reconcile(project.pk).status in ("applied", "in_sync")


def _tls_files(manifests: Path, project: Project) -> dict[str, str]:
    path = manifests / project.namespace / f"01-secret-{TLS_SECRET}.yaml"
    data = yaml.safe_load(path.read_text())["data"]
    return {key: base64.b64decode(value).decode() for key, value in data.items()}


def _workload_tls(manifests: Path, project: Project, service: str) -> Any:
    from networking.passes import desired_state_for

    tls = mtls.material(project, dict(project.services.values_list("pk", "name")), {})
    return desired_state_for(project, tls=tls).workloads[service]


def test_turning_it_on_gives_the_project_a_ca_once_and_is_audited(world: World) -> None:
    owner = user(world, "owner")
    generation = world.project.generation
    assert mtls.enable(world.project, actor=owner)
    assert not mtls.enable(world.project, actor=owner)
    ca = CertificateAuthority.objects.get(project=world.project)
    assert ca.generation == 1 and ca.key is not None
    assert "PRIVATE KEY" not in ca.certificate
    event = AuditEvent.objects.get(action=AuditEvent.Action.MTLS_ENABLED)
    assert event.actor == owner and "PRIVATE" not in str(event.details)
    assert Project.objects.get(pk=world.project.pk).generation == generation + 1


def test_a_project_over_the_limit_is_told_why(world: World, settings: Any) -> None:
    settings.MTLS_MAX_SERVICES = 1
    with pytest.raises(mtls.MTLSRefused, match="up to 1 services; this one has 2"):
        mtls.enable(world.project, actor=user(world, "owner"))
    assert not MutualTLS.objects.exists()


def test_a_pass_issues_every_service_its_certificate_and_mounts_it(
    world: World, manifests: Path
) -> None:
    mtls.enable(world.project, actor=user(world, "owner"))
    _pass(world.project)
    files = _tls_files(manifests, world.project)
    ca = CertificateAuthority.objects.get(project=world.project)
    assert files["ca.pem"] == ca.certificate
    for service in ("api", "postgres"):
        certificate = x509.load_pem_x509_certificate(files[f"{service}.cert.pem"].encode())
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        assert names.value.get_values_for_type(x509.DNSName) == [f"{service}.internal"]
        assert identity.identity_of(files[f"{service}.cert.pem"]) == (world.project.uid, service)
        assert files[f"{service}.key.pem"].startswith("-----BEGIN PRIVATE KEY-----")
        assert files[f"{service}.accept.txt"].splitlines()[-1] == (
            f"spiffe://stackblaze.cloud/project/{world.project.uid}/service/*"
        )
        # Signed by the project's CA, for 7 days.
        ca_certificate = x509.load_pem_x509_certificate(ca.certificate.encode())
        certificate.verify_directly_issued_by(ca_certificate)
        life = certificate.not_valid_after_utc - certificate.not_valid_before_utc
        assert dt.timedelta(days=7) <= life <= dt.timedelta(days=7, minutes=5)
    workload = _workload_tls(manifests, world.project, "api")
    assert workload.tls == "api"
    assert workload.tls_mount() == {
        "name": "stackblaze-tls",
        "mountPath": TLS_MOUNT_PATH,
        "readOnly": True,
    }
    volume = workload.tls_volume()
    assert volume["secret"]["items"] == [
        {"key": "api.cert.pem", "path": "cert.pem"},
        {"key": "api.key.pem", "path": "key.pem"},
        {"key": "ca.pem", "path": "ca.pem"},
        {"key": "api.accept.txt", "path": "accept.txt"},
    ]
    # A second pass issues nothing new.
    serials = set(ServiceCertificate.objects.values_list("serial", flat=True))
    _pass(world.project)
    assert set(ServiceCertificate.objects.values_list("serial", flat=True)) == serials


def test_a_project_without_it_has_no_tls_secret_and_mounts_nothing(
    world: World, manifests: Path
) -> None:
    _pass(world.project)
    assert not (manifests / world.project.namespace / f"01-secret-{TLS_SECRET}.yaml").exists()
    assert not ServiceCertificate.objects.exists()


def test_a_new_service_gets_its_certificate_at_its_first_pass(
    world: World, manifests: Path
) -> None:
    mtls.enable(world.project, actor=user(world, "owner"))
    _pass(world.project)
    Service(project=world.project, display_name="billing", kind="private", ports=[9000]).create(
        actor=None
    )
    _pass(world.project)
    assert "billing.cert.pem" in _tls_files(manifests, world.project)


def test_renewal_issues_a_new_certificate_once_two_thirds_have_passed(
    world: World, manifests: Path
) -> None:
    mtls.enable(world.project, actor=user(world, "owner"))
    _pass(world.project)
    assert mtls.renew_due() == 0  # nothing due: no pass asked, nothing audited
    before = ServiceCertificate.objects.get(service=world.api)
    assert (
        before.renew_after - before.not_before
        == (before.not_after - before.not_before) * identity.RENEW_AFTER
    )
    later = before.renew_after + dt.timedelta(seconds=1)
    assert mtls.renew_due(later) == 1
    generation = Project.objects.get(pk=world.project.pk).generation
    assert AuditEvent.objects.filter(action=AuditEvent.Action.MTLS_RENEWED).count() == 1
    tls = mtls.material(
        world.project, {world.api.pk: "api", world.postgres.pk: "postgres"}, {}, now=later
    )
    assert tls is not None
    after = ServiceCertificate.objects.get(service=world.api)
    assert after.serial != before.serial and after.not_after > before.not_after
    assert tls.services["api"].certificate == after.certificate
    assert Project.objects.get(pk=world.project.pk).generation == generation


def test_a_renamed_service_is_reissued_naming_its_new_and_old_hostnames(
    world: World, manifests: Path
) -> None:
    mtls.enable(world.project, actor=user(world, "owner"))
    _pass(world.project)
    tls = mtls.material(
        world.project, {world.api.pk: "storefront-api"}, {"storefront-api": ("api",)}
    )
    assert tls is not None
    row = ServiceCertificate.objects.get(service=world.api)
    assert row.hostnames == ["storefront-api.internal", "api.internal"]
    assert identity.identity_of(row.certificate) == (world.project.uid, "storefront-api")
    # Its identity first, the old one after while the old name lives (an accept list not
    # refreshed yet still names it so).
    certificate = x509.load_pem_x509_certificate(row.certificate.encode())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    uid = world.project.uid
    assert names.get_values_for_type(x509.UniformResourceIdentifier) == [
        f"spiffe://stackblaze.cloud/project/{uid}/service/storefront-api",
        f"spiffe://stackblaze.cloud/project/{uid}/service/api",
    ]


def test_accept_calls_from_lists_the_chosen_services_and_their_old_names(world: World) -> None:
    owner = user(world, "owner")
    mtls.enable(world.project, actor=owner)
    worker = make_service(world.project, "worker", Service.Kind.PRIVATE, [9000])
    assert mtls.set_callers(world.postgres, any_caller=False, callers=[world.api], actor=owner)
    assert not mtls.set_callers(world.postgres, any_caller=False, callers=[world.api], actor=owner)
    # A service of another project is never a caller.
    mtls.set_callers(
        world.api, any_caller=False, callers=[worker, world.other_service], actor=owner
    )
    names = dict(world.project.services.values_list("pk", "name"))
    tls = mtls.material(world.project, names, {"api": ("old-api",)})
    assert tls is not None
    uid = world.project.uid
    accepted = [
        line for line in tls.services["postgres"].accept.splitlines() if not line.startswith("#")
    ]
    assert accepted == [
        f"spiffe://stackblaze.cloud/project/{uid}/service/api",
        f"spiffe://stackblaze.cloud/project/{uid}/service/old-api",
    ]
    assert tls.services["api"].accept.splitlines()[-1].endswith("/service/worker")
    assert tls.services["worker"].accept.splitlines()[-1].endswith("/service/*")
    event = (
        AuditEvent.objects.filter(action=AuditEvent.Action.MTLS_CALLERS_CHANGED)
        .order_by("pk")
        .first()
    )
    assert event is not None and event.details == {"callers": ["api"]}
    # Nobody at all is refused (every call to it would be), and so is a list of services
    # that are all gone, or of another project.
    for callers in ([], [world.other_service]):
        with pytest.raises(mtls.MTLSRefused, match="Choose the services that may call"):
            mtls.set_callers(world.postgres, any_caller=False, callers=callers, actor=owner)
    # A form drawn before someone else's change does not undo it.
    drawn = mtls.callers_version(world.postgres)
    mtls.set_callers(world.postgres, any_caller=True, callers=[], actor=owner)
    with pytest.raises(mtls.MTLSRefused, match="changed who may call postgres meanwhile"):
        mtls.set_callers(
            world.postgres, any_caller=False, callers=[worker], actor=owner, expected=drawn
        )
    assert mtls.set_callers(
        world.postgres,
        any_caller=False,
        callers=[worker],
        actor=owner,
        expected=mtls.callers_version(world.postgres),
    )


def test_a_ca_rotation_trusts_both_then_issues_from_the_new_then_retires_the_old(
    world: World, settings: Any
) -> None:
    settings.MTLS_PROPAGATION_SECONDS = 60
    owner = user(world, "owner")
    mtls.enable(world.project, actor=owner)
    names = {world.api.pk: "api", world.postgres.pk: "postgres"}
    first = mtls.material(world.project, names, {})
    assert first is not None
    old_serial = ServiceCertificate.objects.get(service=world.api).serial
    assert mtls.start_ca_rotation(world.project, actor=owner) == 2
    with pytest.raises(mtls.MTLSRefused, match="already being rotated"):
        mtls.start_ca_rotation(world.project, actor=owner)

    def phase() -> str:
        return MutualTLS.objects.get(project=world.project).rotation_phase

    def issuers() -> set[int]:
        return set(ServiceCertificate.objects.values_list("authority__generation", flat=True))

    now = timezone.now()
    # 1. Both CAs trusted; certificates still from the old one.
    tls = mtls.material(world.project, names, {}, now=now)
    assert tls is not None and tls.bundle.count("BEGIN CERTIFICATE") == 2
    assert issuers() == {1}
    assert ServiceCertificate.objects.get(service=world.api).serial == old_serial
    applied = mtls.planned(world.project)
    assert applied is not None and applied.phase == MutualTLS.Phase.TRUST_NEW
    # Applied: it waits for the kubelet to refresh the files everywhere, then moves on.
    assert mtls.after_apply(world.project, applied, now=now) == pytest.approx(60.5)
    assert mtls.after_apply(world.project, applied, now=now + dt.timedelta(seconds=30)) == (
        pytest.approx(30.5)
    )
    assert phase() == MutualTLS.Phase.TRUST_NEW
    now += dt.timedelta(seconds=61)
    assert mtls.after_apply(world.project, applied, now=now) is None
    assert phase() == MutualTLS.Phase.ISSUE_NEW
    # A pass judged on the old phase moves nothing again.
    assert mtls.after_apply(world.project, applied, now=now) is None
    # 2. Every certificate from the new CA, both still trusted.
    tls = mtls.material(world.project, names, {}, now=now)
    assert tls is not None and tls.bundle.count("BEGIN CERTIFICATE") == 2
    assert issuers() == {2}
    applied = mtls.planned(world.project)
    assert applied is not None
    mtls.after_apply(world.project, applied, now=now)
    now += dt.timedelta(seconds=61)
    mtls.after_apply(world.project, applied, now=now)
    assert phase() == MutualTLS.Phase.RETIRE_OLD
    # 3. Only the new CA trusted; the old one's key destroyed. It is "retired" on the record
    # once that bundle has reached every pod.
    old = CertificateAuthority.objects.get(project=world.project, generation=1)
    assert old.retired_at is None and old.key is None
    tls = mtls.material(world.project, names, {}, now=now)
    assert tls is not None and tls.bundle.count("BEGIN CERTIFICATE") == 1
    new = CertificateAuthority.objects.get(project=world.project, generation=2)
    assert tls.bundle == new.certificate
    applied = mtls.planned(world.project)
    assert applied is not None
    mtls.after_apply(world.project, applied, now=now)
    mtls.after_apply(world.project, applied, now=now + dt.timedelta(seconds=61))
    state = MutualTLS.objects.get(project=world.project)
    assert not state.rotating and state.last_rotated_at is not None
    old.refresh_from_db()
    assert old.retired_at is not None
    assert list(
        AuditEvent.objects.filter(action__startswith="mtls.ca_rotation")
        .order_by("pk")
        .values_list("action", flat=True)
    ) == [
        "mtls.ca_rotation_started",
        "mtls.ca_rotation_phase",
        "mtls.ca_rotation_phase",
        "mtls.ca_rotation_completed",
    ]


def test_no_key_reaches_the_audit_log_or_the_certificate_views(world: World) -> None:
    mtls.enable(world.project, actor=user(world, "owner"))
    names = {world.api.pk: "api"}
    tls = mtls.material(world.project, names, {})
    assert tls is not None
    key = tls.services["api"].key
    views = mtls.certificates(world.project)
    assert [view.service for view in views] == ["api"]
    assert key not in repr(views)
    for event in AuditEvent.objects.all():
        assert "PRIVATE KEY" not in str(event.details)
    ca = CertificateAuthority.objects.get(project=world.project)
    assert "PRIVATE" not in repr(ca.key) and "PRIVATE" not in str(ca.key)


def test_a_full_project_with_mutual_tls_takes_no_more_services(world: World, settings: Any) -> None:
    mtls.enable(world.project, actor=user(world, "owner"))
    settings.MTLS_MAX_SERVICES = 2
    service = Service(project=world.project, display_name="billing", kind="private", ports=[9000])
    with pytest.raises(ValidationError, match="mutual TLS on and 2 services"):
        service.create(actor=user(world, "owner"))
    assert not world.project.services.filter(name="billing").exists()
    # Without mutual TLS, the limit is not the project's.
    service = Service(
        project=world.other_project, display_name="billing", kind="private", ports=[9000]
    )
    service.create(actor=None)


def test_a_service_s_files_never_show_their_key_when_printed(world: World) -> None:
    mtls.enable(world.project, actor=user(world, "owner"))
    tls = mtls.material(world.project, {world.api.pk: "api"}, {})
    assert tls is not None
    key = tls.services["api"].key
    assert "PRIVATE KEY" in key
    assert key not in repr(tls) and "PRIVATE KEY" not in repr(tls)


def test_a_service_named_with_all_63_characters_gets_its_certificate(world: World) -> None:
    mtls.enable(world.project, actor=user(world, "owner"))
    name = "a" * 63
    tls = mtls.material(world.project, {world.api.pk: name}, {})
    assert tls is not None
    assert identity.identity_of(tls.services[name].certificate) == (world.project.uid, name)


def test_beat_rotates_a_ca_a_month_before_it_expires(world: World) -> None:
    owner = user(world, "owner")
    mtls.enable(world.project, actor=owner)
    ca = CertificateAuthority.objects.get(project=world.project)
    assert ca.not_after - timezone.now() > dt.timedelta(days=364)
    assert mtls.rotate_expiring() == 0
    assert mtls.rotate_expiring(ca.not_after - dt.timedelta(days=31)) == 0
    assert mtls.rotate_expiring(ca.not_after - dt.timedelta(days=29)) == 1
    state = MutualTLS.objects.get(project=world.project)
    assert state.rotation_phase == MutualTLS.Phase.TRUST_NEW
    assert mtls.rotate_expiring(ca.not_after - dt.timedelta(days=29)) == 0  # one at a time
    event = AuditEvent.objects.get(action=AuditEvent.Action.CA_ROTATION_STARTED)
    assert event.actor_label == "system"


def test_callers_that_would_outgrow_the_secret_are_refused(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = user(world, "owner")
    mtls.enable(world.project, actor=owner)
    mtls.material(world.project, dict(world.project.services.values_list("pk", "name")), {})
    size = mtls.projected_size(world.project)
    assert 2_000 < size < 6_000  # two services' files: a few KiB
    with_callers = mtls.projected_size(world.project, {world.postgres.pk: ["api"] * 10})
    assert with_callers > size + 10 * 70  # a line (base64) a caller
    monkeypatch.setattr(mtls, "SECRET_BUDGET", size + 200)
    assert mtls.set_callers(world.postgres, any_caller=False, callers=[world.api], actor=owner)
    many = [
        make_service(world.project, f"caller-{n}", Service.Kind.PRIVATE, [9000]) for n in range(5)
    ]
    with pytest.raises(mtls.MTLSRefused, match="cannot accept 5 named callers"):
        mtls.set_callers(world.postgres, any_caller=False, callers=many, actor=owner)
    assert mtls.callers_of([Service.objects.get(pk=world.postgres.pk)]) == {
        world.postgres.pk: ["api"]
    }


def test_a_pass_that_read_a_service_since_deleted_or_renamed_issues_safely(world: World) -> None:
    owner = user(world, "owner")
    mtls.enable(world.project, actor=owner)
    mtls.set_callers(world.postgres, any_caller=False, callers=[world.api], actor=owner)
    gone = make_service(world.project, "gone", Service.Kind.PRIVATE, [9000])
    names = dict(world.project.services.values_list("pk", "name"))
    Service.objects.filter(pk=gone.pk).delete()
    # postgres renamed after the pass read it: its restriction holds under the old name.
    names[world.postgres.pk] = "old-postgres"
    tls = mtls.material(world.project, names, {})
    assert tls is not None
    assert set(tls.services) == {"api", "old-postgres"}
    accepted = [line for line in tls.services["old-postgres"].accept.splitlines() if line[0] != "#"]
    assert accepted == [f"spiffe://stackblaze.cloud/project/{world.project.uid}/service/api"]
    assert not ServiceCertificate.objects.filter(service_id=gone.pk).exists()


def test_for_pass_gives_the_files_with_the_phase_they_belong_to(world: World) -> None:
    owner = user(world, "owner")
    mtls.enable(world.project, actor=owner)
    names = {world.api.pk: "api"}
    files, phase = mtls.for_pass(world.project, names, {})
    assert files is not None and phase is None
    mtls.start_ca_rotation(world.project, actor=owner)
    files, phase = mtls.for_pass(world.project, names, {})
    assert files is not None and files.bundle.count("BEGIN CERTIFICATE") == 2
    assert phase is not None and phase.phase == MutualTLS.Phase.TRUST_NEW


def _workload(volumes: list[dict[str, Any]], mounts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "metadata": {"name": "api", "namespace": "prj-x"},
        "spec": {
            "template": {
                "metadata": {},
                "spec": {
                    "containers": [{"name": "app", "volumeMounts": mounts}],
                    "volumes": volumes,
                },
            }
        },
    }


def test_a_workload_mounts_its_own_files_and_loses_them_with_its_service() -> None:
    from networking.cluster.desired import WorkloadSpec
    from networking.cluster.kube import _workload_patch, workload_matches

    spec = WorkloadSpec(tls="api")
    bare = _workload([], [])
    assert not workload_matches(bare, spec)
    patch = _workload_patch(bare, "Deployment", spec)
    template = patch["spec"]["template"]["spec"]
    [volume] = template["volumes"]
    [mount] = template["containers"][0]["volumeMounts"]
    assert mount == {"name": "stackblaze-tls", "mountPath": TLS_MOUNT_PATH, "readOnly": True}
    mounted = _workload([{**volume, "secret": {**volume["secret"], "defaultMode": 420}}], [mount])
    assert workload_matches(mounted, spec)
    # Its service gone (or mutual TLS not its any more): our volume is taken off, by an
    # apply that owns nothing.
    assert not workload_matches(mounted, WorkloadSpec())
    assert "spec" not in _workload_patch(mounted, "Deployment", WorkloadSpec())
    # A volume of that name that is not ours is none of our business.
    theirs = _workload([{"name": "stackblaze-tls", "emptyDir": {}}], [])
    assert workload_matches(theirs, WorkloadSpec())


def test_the_size_is_checked_with_mutual_tls_off_and_when_turning_it_on(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = user(world, "owner")
    size = mtls.projected_size(world.project)
    monkeypatch.setattr(mtls, "SECRET_BUDGET", size + 100)
    many = [
        make_service(world.project, f"caller-{n}", Service.Kind.PRIVATE, [9000]) for n in range(5)
    ]
    with pytest.raises(mtls.MTLSRefused, match="cannot accept 5 named callers"):
        mtls.set_callers(world.postgres, any_caller=False, callers=many, actor=owner)
    monkeypatch.setattr(mtls, "SECRET_BUDGET", mtls.projected_size(world.project) - 1)
    with pytest.raises(mtls.MTLSRefused, match="more than the"):
        mtls.enable(world.project, actor=owner)
    assert mtls.state_of(world.project) is None
