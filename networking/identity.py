"""Service identities for mutual TLS: a certificate authority per project, a certificate per
service.

Pure functions of their inputs, like the desired state: no database, no cluster. The worker
calls them to issue and renew; the models keep the results (private keys sealed like every
secret, ``networking.crypto``).

- A project's CA is an EC P-256 key and a self-signed certificate that may sign leaves only
  (path length 0), and only for names under ``.internal`` (a name constraint): a leaked CA
  key cannot vouch for ``bank.example``.
- A service's certificate names it twice: as the hostnames callers dial (``api.internal``, and
  any old hostname still resolving) and as a URI identity,
  ``spiffe://stackblaze.cloud/project/<project id>/service/<name>``, which the other side
  checks against its "accept calls from" list. It serves and calls (both extended key
  usages), lives ``lifetime`` (7 days by default) and is renewed once two thirds of it have
  passed, so a renewal that fails has days to succeed before anything expires.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TRUST_DOMAIN = "stackblaze.cloud"
INTERNAL_SUFFIX = "internal"
CA_LIFETIME = dt.timedelta(days=365)
LEAF_LIFETIME = dt.timedelta(days=7)
# Issued a little in the past: a node whose clock is behind still accepts a fresh certificate.
BACKDATE = dt.timedelta(minutes=5)
RENEW_AFTER = 2 / 3


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, both PEM. The key is a secret: seal it to store it,
    never log it, never show it."""

    certificate_pem: str
    key_pem: str = field(repr=False)


def spiffe_id(project_uid: str, service_name: str) -> str:
    return f"spiffe://{TRUST_DOMAIN}/project/{project_uid}/service/{service_name}"


def identity_of(certificate_pem: str) -> tuple[str, str] | None:
    """(project ID, service name) of a certificate's SPIFFE identity; None if it has none."""
    certificate = x509.load_pem_x509_certificate(certificate_pem.encode())
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return None
    prefix = f"spiffe://{TRUST_DOMAIN}/project/"
    for uri in names.value.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith(prefix):
            parts = uri.removeprefix(prefix).split("/")
            if len(parts) == 3 and parts[1] == "service" and parts[0] and parts[2]:
                return parts[0], parts[2]
    return None


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def _key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    """Signatures (a TLS handshake's), and for a CA, certificates and revocation lists."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def new_ca(project_uid: str, *, now: dt.datetime, generation: int = 1) -> Issued:
    """A new CA for the project (``generation`` counts its CAs: a rotation makes the next)."""
    key = _key()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Stackblaze"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"project {project_uid} CA {generation}"),
        ]
    )
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
        .add_extension(
            x509.NameConstraints(
                # DNS only: TLS stacks differ on URI constraints (Python's refuses them).
                permitted_subtrees=[x509.DNSName(INTERNAL_SUFFIX)],
                excluded_subtrees=None,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(_pem(certificate), _pem_key(key))


def issue(
    ca: Issued,
    *,
    project_uid: str,
    service_name: str,
    hostnames: Sequence[str],
    now: dt.datetime,
    lifetime: dt.timedelta = LEAF_LIFETIME,
    old_names: Sequence[str] = (),
) -> Issued:
    """A certificate for one service, signed by the project's CA: its hostnames (each under
    ``.internal``) and its SPIFFE identity, for serving and for calling; after it, the
    identities of ``old_names`` (a renamed service's, while they still resolve)."""
    if not hostnames:
        raise ValueError("a service certificate names at least one hostname")
    for hostname in hostnames:
        if not hostname.endswith(f".{INTERNAL_SUFFIX}"):
            raise ValueError(f"{hostname} is not an .{INTERNAL_SUFFIX} hostname")
    ca_certificate = x509.load_pem_x509_certificate(ca.certificate_pem.encode())
    ca_key = serialization.load_pem_private_key(ca.key_pem.encode(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = _key()
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        # The service's name (a DNS label: at most 63 characters, as a common name must be):
        # what TLS checks is the SANs below.
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, service_name)]))
        .issuer_name(ca_certificate.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + lifetime, ca_certificate.not_valid_after_utc))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    *(x509.DNSName(hostname) for hostname in dict.fromkeys(hostnames)),
                    # Its identity first; then, while a renamed service's old names still
                    # resolve, the identities of those names: an accept list that still
                    # names it the old way (its file not refreshed yet) lets it in.
                    *(
                        x509.UniformResourceIdentifier(spiffe_id(project_uid, name))
                        for name in dict.fromkeys([service_name, *old_names])
                    ),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signs_certificates=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return Issued(_pem(certificate), _pem_key(key))


def due_for_renewal(certificate_pem: str, *, now: dt.datetime) -> bool:
    """Whether two thirds of the certificate's life have passed (or it has expired)."""
    certificate = x509.load_pem_x509_certificate(certificate_pem.encode())
    start, end = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    return now >= start + (end - start) * RENEW_AFTER


def trust_bundle(ca_certificates: Iterable[str]) -> str:
    """The CAs a workload trusts, one PEM after another (two during a CA rotation)."""
    return "".join(pem if pem.endswith("\n") else pem + "\n" for pem in ca_certificates)
