"""The private network's desired state.

PostgreSQL is the source of truth: these rows say what each project's network should be, and
the cluster is made to match them (see ``networking/cluster``). One module per aggregate, each
importing only those below it (``make lint`` holds the order):

- ``audit``: who did what, and when;
- ``tenancy``: organizations and their members' roles;
- ``sync``: what the last pass applied, the watcher's heartbeat, each pass's outcome;
- ``peering``: VPC peering between two Enterprise projects;
- ``inbox``: the header's notifications, and who has read them;
- ``projects``: a project, its services, their old hostnames, references, connection tests;
- ``secrets``: shared secrets and their rotations;
- ``identity``: mutual TLS: a project's certificate authorities, each service's certificate.

Import the models from here (``from networking.models import Service``), not from the modules.
"""

from networking.models.audit import AuditEvent, actor_label, confirm_standing, via_token_of
from networking.models.identity import CertificateAuthority, MutualTLS, ServiceCertificate
from networking.models.inbox import InboxState, Notification, NotificationRead
from networking.models.peering import PeeringNotification, PeeringRequest
from networking.models.projects import (
    ALIAS_CHOICES,
    ALIAS_DEFAULT,
    ALIAS_EXTENSION,
    DATABASE_PORTS,
    DEFAULT_WEB_PORT,
    MAX_PORTS,
    PROJECT_ID_PATTERN,
    ConnectionTest,
    Project,
    ReferenceVariable,
    Service,
    ServiceAlias,
    generate_project_uid,
)
from networking.models.secrets import SecretRotation, SharedSecret
from networking.models.sync import AppliedRecord, ApplyAttempt, WatcherHeartbeat
from networking.models.tenancy import Membership, Organization

__all__ = [
    "ALIAS_CHOICES",
    "ALIAS_DEFAULT",
    "ALIAS_EXTENSION",
    "DATABASE_PORTS",
    "DEFAULT_WEB_PORT",
    "MAX_PORTS",
    "PROJECT_ID_PATTERN",
    "AppliedRecord",
    "ApplyAttempt",
    "AuditEvent",
    "CertificateAuthority",
    "ConnectionTest",
    "InboxState",
    "Membership",
    "MutualTLS",
    "Notification",
    "NotificationRead",
    "Organization",
    "PeeringNotification",
    "PeeringRequest",
    "Project",
    "ReferenceVariable",
    "SecretRotation",
    "Service",
    "ServiceAlias",
    "ServiceCertificate",
    "SharedSecret",
    "WatcherHeartbeat",
    "actor_label",
    "confirm_standing",
    "generate_project_uid",
    "via_token_of",
]
