"""``manage.py create_api_token USERNAME --org SLUG --role ROLE``: print a new API token.

For operators and tests. The token is printed once, on its own line, and stored only as a hash.
Support staff get a token without an organization with ``--role support``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from api.models import ApiToken
from networking.models import Organization


class Command(BaseCommand):
    help = "Create a personal API token and print it (it is never shown again)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--org", default="", help="the organization's slug")
        parser.add_argument("--role", required=True, choices=[role.value for role in ApiToken.Role])
        parser.add_argument("--name", default="", help="default: cli-<role>")
        parser.add_argument("--expires-in-days", type=int, default=None)

    def handle(self, *args: Any, **options: Any) -> None:
        user = get_user_model().objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"No user named {options['username']!r}.")
        organization = None
        if options["org"]:
            organization = Organization.objects.filter(slug=options["org"]).first()
            if organization is None:
                raise CommandError(f"No organization with the slug {options['org']!r}.")
        elif options["role"] != ApiToken.Role.SUPPORT:
            raise CommandError("Give --org SLUG (only --role support goes without one).")
        days = options["expires_in_days"]
        if days is not None and days < 1:
            raise CommandError("--expires-in-days must be at least 1.")
        try:
            _, raw = ApiToken.issue(
                user=user,
                organization=organization,
                name=options["name"] or f"cli-{options['role']}",
                role=options["role"],
                expires_at=timezone.now() + timedelta(days=days) if days else None,
            )
        except ValidationError as error:
            raise CommandError(" ".join(error.messages)) from None
        self.stdout.write(raw)
