"""The API tokens form, shared by the dashboard's tokens page and the API (the forms both front
ends share about projects are in ``networking.forms``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms
from django.utils import timezone

from api.models import ApiToken
from networking import plain_text


class ApiTokenForm(forms.Form):
    """A new personal API token: a name to recognise it by, a role up to one's own, an expiry."""

    EXPIRY_CHOICES = [
        ("", "Never"),
        ("7", "In 7 days"),
        ("30", "In 30 days"),
        ("90", "In 90 days"),
        ("365", "In a year"),
    ]

    name = forms.CharField(
        label="Name",
        max_length=50,
        validators=[plain_text.single_line],
        help_text="Where it is used, e.g. ci-deploy or runbook. Actions taken with it read "
        "“you via token ci-deploy” in the audit log.",
        error_messages={"required": "Give the token a name, like ci-deploy."},
    )
    role = forms.ChoiceField(
        label="Role",
        help_text="What the token may do: at most what you may. A viewer token changes nothing.",
    )
    expires_in_days = forms.TypedChoiceField(
        label="Expires",
        choices=EXPIRY_CHOICES,
        coerce=int,
        empty_value=None,
        required=False,
    )

    def __init__(self, *args: Any, member_role: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        allowed = ApiToken.roles_for(member_role)
        role_field = self.fields["role"]
        assert isinstance(role_field, forms.ChoiceField)
        role_field.choices = [
            (role, label) for role, label in ApiToken.Role.choices if role in allowed
        ]
        self.fields["name"].widget.attrs.update({"autocomplete": "off", "spellcheck": "false"})
        self.initial.setdefault("role", ApiToken.Role.VIEWER)

    def issue(self, user: Any, organization: Any) -> tuple[ApiToken, str]:
        """The token the valid form asks for, and its secret (``ApiToken.issue``'s refusals
        pass through as ``ValidationError``)."""
        days = self.cleaned_data["expires_in_days"]
        return ApiToken.issue(
            user=user,
            organization=organization,
            name=self.cleaned_data["name"],
            role=self.cleaned_data["role"],
            expires_at=timezone.now() + timedelta(days=days) if days else None,
        )
