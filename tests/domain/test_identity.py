"""Service identities: what a TLS peer checking a certificate against the project's CA sees."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from networking import identity

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)


def store(*cas: identity.Issued) -> Store:
    return Store([x509.load_pem_x509_certificate(ca.certificate_pem.encode()) for ca in cas])


def leaf(issued: identity.Issued) -> x509.Certificate:
    return x509.load_pem_x509_certificate(issued.certificate_pem.encode())


def verify_server(trusted: Store, issued: identity.Issued, hostname: str) -> None:
    verifier = (
        PolicyBuilder().store(trusted).time(NOW).build_server_verifier(x509.DNSName(hostname))
    )
    verifier.verify(leaf(issued), [])


def verify_client(trusted: Store, issued: identity.Issued) -> list[str]:
    verifier = PolicyBuilder().store(trusted).time(NOW).build_client_verifier()
    verified = verifier.verify(leaf(issued), [])
    return [str(name.value) for name in verified.subjects or []]


@pytest.fixture(scope="module")
def ca() -> identity.Issued:
    return identity.new_ca("storefront01", now=NOW)


@pytest.fixture(scope="module")
def api(ca: identity.Issued) -> identity.Issued:
    return identity.issue(
        ca,
        project_uid="storefront01",
        service_name="api",
        hostnames=["api.internal", "api-gateway.internal"],
        now=NOW,
    )


def test_a_service_certificate_serves_its_hostnames_old_ones_included(
    ca: identity.Issued, api: identity.Issued
) -> None:
    verify_server(store(ca), api, "api.internal")
    verify_server(store(ca), api, "api-gateway.internal")  # an old hostname still resolving
    with pytest.raises(VerificationError):
        verify_server(store(ca), api, "postgres.internal")


def test_it_calls_as_its_spiffe_identity(ca: identity.Issued, api: identity.Issued) -> None:
    subjects = verify_client(store(ca), api)
    assert "spiffe://stackblaze.cloud/project/storefront01/service/api" in subjects
    assert identity.identity_of(api.certificate_pem) == ("storefront01", "api")


def test_another_projects_certificate_is_not_trusted(ca: identity.Issued) -> None:
    other_ca = identity.new_ca("analytics001", now=NOW)
    intruder = identity.issue(
        other_ca,
        project_uid="analytics001",
        service_name="api",
        hostnames=["api.internal"],
        now=NOW,
    )
    with pytest.raises(VerificationError):
        verify_server(store(ca), intruder, "api.internal")
    with pytest.raises(VerificationError):
        verify_client(store(ca), intruder)


def test_during_a_ca_rotation_both_cas_are_trusted(ca: identity.Issued) -> None:
    next_ca = identity.new_ca("storefront01", now=NOW, generation=2)
    reissued = identity.issue(
        next_ca, project_uid="storefront01", service_name="api", hostnames=["api.internal"], now=NOW
    )
    bundle = identity.trust_bundle([ca.certificate_pem, next_ca.certificate_pem])
    both = Store(x509.load_pem_x509_certificates(bundle.encode()))
    verify_server(both, reissued, "api.internal")
    with pytest.raises(VerificationError):
        verify_server(store(ca), reissued, "api.internal")


def test_the_ca_vouches_only_for_internal_names(ca: identity.Issued) -> None:
    with pytest.raises(ValueError, match=r"not an \.internal hostname"):
        identity.issue(
            ca,
            project_uid="storefront01",
            service_name="api",
            hostnames=["bank.example"],
            now=NOW,
        )
    # Signed by the CA's key all the same (a leaked key, say): peers refuse it.
    forged = identity.issue(
        ca, project_uid="storefront01", service_name="api", hostnames=["x.internal"], now=NOW
    )
    ca_key = serialization.load_pem_private_key(ca.key_pem.encode(), password=None)
    builder = x509.CertificateBuilder(
        issuer_name=leaf(ca).subject,
        subject_name=leaf(forged).subject,
        public_key=leaf(forged).public_key(),
        serial_number=x509.random_serial_number(),
        not_valid_before=NOW - dt.timedelta(minutes=1),
        not_valid_after=NOW + dt.timedelta(days=1),
        extensions=[  # everything a real one has, for another name
            *(e for e in leaf(forged).extensions if e.oid != x509.SubjectAlternativeName.oid),
            x509.Extension(
                x509.SubjectAlternativeName.oid,
                False,
                x509.SubjectAlternativeName([x509.DNSName("bank.example")]),
            ),
        ],
    )
    bank = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    verifier = PolicyBuilder().store(store(ca)).time(NOW)
    with pytest.raises(VerificationError):
        verifier.build_server_verifier(x509.DNSName("bank.example")).verify(bank, [])


def test_a_certificate_is_renewed_after_two_thirds_of_its_life(api: identity.Issued) -> None:
    start = leaf(api).not_valid_before_utc
    end = leaf(api).not_valid_after_utc
    assert end - start == identity.LEAF_LIFETIME + identity.BACKDATE
    assert not identity.due_for_renewal(api.certificate_pem, now=NOW + dt.timedelta(days=4))
    assert identity.due_for_renewal(api.certificate_pem, now=NOW + dt.timedelta(days=5))


def test_keys_are_p256_and_never_in_the_certificate(api: identity.Issued) -> None:
    public = leaf(api).public_key()
    assert public.curve.name == "secp256r1"  # type: ignore[union-attr]
    assert "PRIVATE KEY" in api.key_pem and "PRIVATE KEY" not in api.certificate_pem
