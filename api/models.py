"""What the API keeps for itself: its tokens, and the answers to requests sent with an
``Idempotency-Key``."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import string
from datetime import timedelta
from typing import Any, ClassVar

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction
from django.db.models import F, Q
from django.db.models.functions import Lower
from django.utils import timezone

from networking import plain_text
from networking.access import SUPPORT_ROLE
from networking.models import AuditEvent, Membership, Organization, actor_label, confirm_standing

logger = logging.getLogger(__name__)


class IdempotencyRecord(models.Model):
    """A mutating request sent with an ``Idempotency-Key``, and the answer it got.

    The first request with a key claims it by inserting this row (the unique constraint decides
    between simultaneous ones); it stores the answer once it has one. A retry with the same key
    and the same request gets that answer back instead of acting again. Only successful answers
    are kept: a refused or failed request changed nothing, so its key is released and a retry
    runs afresh. Rows older than ``KEEP_FOR`` are forgotten.
    """

    KEEP_FOR: ClassVar[timedelta] = timedelta(hours=24)

    # Whose key it is: a digest of the API token, or the signed-in user's id.
    scope = models.CharField(max_length=80)
    key = models.CharField(max_length=255)
    # SHA-256 of the method, path, query and body: the same key for another request is refused.
    request_digest = models.CharField(max_length=64)
    status = models.PositiveSmallIntegerField(null=True, blank=True)  # None while it runs
    content_type = models.CharField(max_length=100, blank=True)
    body = models.BinaryField(blank=True, default=b"")
    headers = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["scope", "key"], name="one_idempotency_key_per_caller")
        ]
        indexes = [
            models.Index(fields=["scope", "created_at"], name="idempotency_by_age"),
            models.Index(fields=["created_at"], name="idempotency_expiry"),
        ]

    def __str__(self) -> str:
        return f"Idempotency-Key {self.key[:20]} ({self.status or 'running'})"

    @classmethod
    def forget_expired(cls, scope: str | None = None) -> int:
        """Drop answers older than ``KEEP_FOR`` (one caller's, or everyone's); how many."""
        expired = cls.objects.filter(created_at__lt=timezone.now() - cls.KEEP_FOR)
        if scope is not None:
            expired = expired.filter(scope=scope)
        deleted, _ = expired.delete()
        return deleted


class ApiToken(models.Model):
    """A personal token for the HTTP API: one user, one organization, a role no higher than theirs.

    The token itself (``sbk_`` and 40 letters and digits, so secret scanners can recognise a
    leaked one) is shown once, when it is issued. Only its SHA-256 digest is stored, with its
    first characters (``prefix``) to find the row and to tell tokens apart in a list.

    Support staff, who belong to no customer organization, hold tokens without one
    (role ``support``): those reach the peering queue and nothing of any tenant.
    """

    class Role(models.TextChoices):
        OWNER = "owner", "Owner"
        MEMBER = "member", "Member"
        VIEWER = "viewer", "Viewer"
        SUPPORT = SUPPORT_ROLE, "Support staff"

    SCHEME: ClassVar[str] = "sbk_"
    _ALPHABET: ClassVar[str] = string.ascii_letters + string.digits
    _SECRET_LENGTH: ClassVar[int] = 40  # about 238 bits
    PREFIX_LENGTH: ClassVar[int] = len(SCHEME) + 8
    # Writing last use on every request would make each API call a write: once a minute is
    # enough to tell a token in use from a forgotten one.
    LAST_USED_RESOLUTION: ClassVar[timedelta] = timedelta(minutes=1)

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, null=True, blank=True, related_name="api_tokens"
    )
    name = models.CharField(max_length=50, validators=[plain_text.single_line])
    role = models.CharField(max_length=20, choices=Role)
    prefix = models.CharField(max_length=16, unique=True)
    digest = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        # Kept from when tokens lived in the networking app: the table was never renamed.
        db_table = "networking_apitoken"
        ordering = ["-created_at", "-id"]
        constraints = [
            # Twenty identical "Create" clicks make one token; a revoked token's name is free.
            models.UniqueConstraint(
                F("user"),
                models.functions.Coalesce(F("organization"), models.Value(0)),
                Lower("name"),
                condition=Q(revoked_at__isnull=True),
                name="one_live_token_name_per_user_and_org",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @staticmethod
    def digest_of(raw: str) -> str:
        return hashlib.sha256(raw.encode()).hexdigest()

    @classmethod
    def capped_role(cls, token_role: str, member_role: str) -> str:
        """The lower of a token's role and its holder's role now (a demotion caps old tokens)."""
        return Membership.lower_role(token_role, member_role)

    @classmethod
    def roles_for(cls, member_role: str) -> list[str]:
        """The roles a member may give a new token: their own or lower."""
        return Membership.roles_up_to(member_role)

    @staticmethod
    def name_taken(name: str) -> ValidationError:
        return ValidationError(
            {
                "name": ValidationError(
                    f"You already have a token named “{name}”. Choose another name.",
                    code="duplicate",
                )
            }
        )

    @classmethod
    def issue(
        cls,
        *,
        user: Any,
        organization: Organization | None,
        name: str,
        role: str,
        expires_at: Any = None,
    ) -> tuple[ApiToken, str]:
        """A new token and its secret, which is never stored and cannot be shown again.

        Refused (``ValidationError``) when the role is above the user's role in the
        organization, or a support token is asked for by someone not on the support staff.
        """
        name = name.strip()
        if organization is None:
            if role != cls.Role.SUPPORT or not user.is_staff:
                raise ValidationError(
                    {"role": ["Only support staff hold tokens without an organization."]}
                )
        else:
            member_role = (
                Membership.objects.filter(user=user, organization=organization)
                .values_list("role", flat=True)
                .first()
            )
            if member_role is None or role not in cls.roles_for(member_role):
                raise ValidationError(
                    {"role": ["A token’s role can’t be higher than your own role here."]}
                )
        raw = cls.SCHEME + "".join(secrets.choice(cls._ALPHABET) for _ in range(cls._SECRET_LENGTH))
        token = cls(
            user=user,
            organization=organization,
            name=name,
            role=role,
            prefix=raw[: cls.PREFIX_LENGTH],
            digest=cls.digest_of(raw),
            expires_at=expires_at,
        )
        # The unique name is checked here with a message that says what to do; the
        # constraint itself still decides between two requests at the same moment.
        token.full_clean(exclude=["prefix", "digest"], validate_constraints=False)
        if (
            cls.objects.filter(user=user, organization=organization, revoked_at__isnull=True)
            .filter(name__iexact=name)
            .exists()
        ):
            raise cls.name_taken(name)
        try:
            with transaction.atomic():
                token.save()
                token._audit(user, AuditEvent.Action.TOKEN_CREATED)
        except IntegrityError:
            raise cls.name_taken(name) from None
        return token, raw

    @classmethod
    def authenticate(cls, raw: str) -> ApiToken:
        """The live token ``raw`` is, with its user; ``TokenRefused`` saying why not.

        The row is found by its prefix and the digests compared in constant time.
        """
        raw = raw.strip()
        secret = raw.removeprefix(cls.SCHEME)
        if not raw.startswith(cls.SCHEME):
            raise TokenRefused("This is not a Stackblaze API token (they start with sbk_).")
        if len(secret) != cls._SECRET_LENGTH or not (secret.isascii() and secret.isalnum()):
            # Nothing else reaches a query. Most often a copy that lost a character.
            raise TokenRefused(
                f"This token is cut short or mistyped: a Stackblaze API token is sbk_ and "
                f"{cls._SECRET_LENGTH} letters and digits. Copy it again (the dashboard shows "
                "it once), or create a new one."
            )
        token = (
            cls.objects.select_related("user", "organization")
            .filter(prefix=raw[: cls.PREFIX_LENGTH])
            .first()
        )
        if token is None or not hmac.compare_digest(token.digest, cls.digest_of(raw)):
            raise TokenRefused("This token is not valid. Create a new one in the dashboard.")
        now = timezone.now()
        if token.revoked_at is not None:
            raise TokenRefused(f"The token “{token.name}” was revoked. Create a new one.")
        if token.expires_at is not None and token.expires_at <= now:
            raise TokenRefused(f"The token “{token.name}” has expired. Create a new one.")
        if not token.user.is_active:
            raise TokenRefused("This token’s account is deactivated.")
        if token.organization_id is not None:
            if token.membership() is None:
                raise TokenRefused(
                    f"This token’s holder is no longer a member of {token.organization}."
                )
        elif not token.user.is_staff:
            raise TokenRefused("This token’s holder is no longer on the support staff.")
        token.note_use(now)
        return token

    def membership(self) -> Membership | None:
        """The holder's membership as this token may use it: its role capped by the token's."""
        if self.organization_id is None:
            return None
        found = (
            Membership.objects.select_related("organization")
            .filter(user_id=self.user_id, organization_id=self.organization_id)
            .first()
        )
        if found is not None:
            found.role = ApiToken.capped_role(self.role, found.role)
        return found

    def note_use(self, now: Any) -> None:
        """Record the use: the first one is audited, later ones update ``last_used_at``."""
        if self.last_used_at is None:
            # Compare-and-swap: of simultaneous first requests, one records the first use.
            if ApiToken.objects.filter(pk=self.pk, last_used_at__isnull=True).update(
                last_used_at=now
            ):
                self._audit(self.user, AuditEvent.Action.TOKEN_FIRST_USED)
        elif self.last_used_at < now - self.LAST_USED_RESOLUTION:
            ApiToken.objects.filter(pk=self.pk).update(last_used_at=now)
        else:
            return  # used within the last minute: nothing to write
        self.last_used_at = now

    def revoke(self, *, actor: Any) -> bool:
        """Revoke once, audited; False if it was already revoked."""
        with transaction.atomic():
            if self.organization_id is not None:
                # The actor's standing (a lock on the organization's row) before the token's
                # row: a removal takes them in that order (it revokes the member's tokens), and
                # the other order deadlocks with it.
                confirm_standing(actor, self.organization_id)
            if not ApiToken.objects.filter(pk=self.pk, revoked_at__isnull=True).update(
                revoked_at=timezone.now()
            ):
                return False
            self._audit(actor, AuditEvent.Action.TOKEN_REVOKED)
        return True

    def _audit(self, actor: Any, action: AuditEvent.Action) -> None:
        details = {"token": self.prefix, "role": self.role, "holder": self.user.get_username()}
        if self.organization_id is None:
            # Support tokens belong to no organization's log: the application log keeps them.
            logger.info("%s: %s %s (%s)", action.label, actor_label(actor), self.name, details)
            return
        AuditEvent.record(
            organization_id=self.organization_id,
            project=None,
            actor=actor,
            action=action,
            target=self.name,
            details=details,
        )


class TokenRefused(Exception):
    """An API token that may not be used; ``str()`` says why, for the caller."""
