"""The API's part in what happens elsewhere: someone leaving an organization takes their
tokens for it with them."""

from __future__ import annotations

from typing import Any

from django.dispatch import receiver
from django.utils import timezone

from api.models import ApiToken
from networking.models import Organization
from networking.teams import member_removed


@receiver(member_removed, dispatch_uid="api.revoke_tokens_of_removed_member")
def revoke_tokens_of_removed_member(
    sender: Any, organization: Organization, user_id: int, **kwargs: Any
) -> int:
    """Their API tokens for this organization are revoked: added back one day, they start with
    none (an old token in a forgotten CI job would otherwise work again). How many."""
    return ApiToken.objects.filter(
        user_id=user_id, organization=organization, revoked_at__isnull=True
    ).update(revoked_at=timezone.now())
