"""The audit log as people read it: sentences, readable details, filters and a CSV export."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from django.db.models import QuerySet
from django.utils import timezone

from networking import plain_text
from networking.models import AuditEvent

# What the "What" filter offers: a word people use, and the actions it covers.
GROUPS: dict[str, tuple[str, str]] = {
    "project": ("Project", "project."),
    "service": ("Services", "service."),
    "secret": ("Shared secrets", "secret."),
    "peering": ("Peering", "peering."),
    "member": ("Team", "member."),
}
_PEERING_TARGET_PREFIX = "peering with "

# What a date filter takes, and what the page, the export and the API say otherwise.
DAY_PATTERN = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
DAY_REFUSAL = "Give a day as YYYY-MM-DD, like 2025-01-31."
ORDER_REFUSAL = "“From” must be on or before “To”: swap the two days."


def target_text(event: AuditEvent) -> str:
    """What the action was done to, without repeating the action ("peering peering")."""
    target = event.target
    if event.action.startswith("peering.") and target.startswith(_PEERING_TARGET_PREFIX):
        peer = str(event.details.get("peer_name") or target.removeprefix(_PEERING_TARGET_PREFIX))
        return f"with {peer}"
    return target


def _value(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(item) for item in value) or "none"
    if value is None or value == "":
        return "none"
    return str(value)


def details_text(event: AuditEvent) -> str:
    """``ports 8080 → 80, 443``; ``services: api, worker``; never a Python list."""
    details = dict(event.details or {})
    parts = []
    if "from" in details and "to" in details:
        what = {
            AuditEvent.Action.SERVICE_PORTS_CHANGED.value: "ports ",
            AuditEvent.Action.MEMBER_ROLE_CHANGED.value: "role ",
        }.get(event.action, "")
        parts.append(f"{what}{_value(details.pop('from'))} → {_value(details.pop('to'))}")
    details.pop("peer_name", None)
    for key, value in details.items():
        if key == "request":
            parts.append(f"request #{value}")
        elif key == "peer":
            parts.append(f"project ID {value}")
        elif key == "old_name_until":
            parts.append(f"the old hostname resolves until {str(value).replace('T', ' ')}")
        elif key == "alias_ended":
            parts.append(f"{value}.internal is its own name again")
        elif key == "until":
            parts.append(f"until {str(value).replace('T', ' ')}")
        elif key == "seconds_left":
            parts.append(f"{max(int(value) // 60, 1)} min before it would have ended")
        elif key == "rotate_every_days":
            if value:
                parts.append(f"rotated every {value} days")
        else:
            parts.append(f"{key.replace('_', ' ')}: {_value(value)}")
    return "; ".join(parts)


@dataclass(frozen=True)
class Filters:
    actor: str = ""
    group: str = ""
    since: date | None = None
    until: date | None = None
    # What is wrong with the dates as given, by query key ("since", "until"). A date that
    # can't be read filters nothing, so whoever shows events must say so instead.
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_query(cls, query: Any) -> Filters:
        errors: dict[str, str] = {}

        def day(key: str) -> date | None:
            text = str(query.get(key, "")).strip()
            if not text:
                return None
            try:
                if DAY_PATTERN.fullmatch(text):
                    return date.fromisoformat(text)
            except ValueError:  # a day the calendar lacks: 2026-02-30
                pass
            errors[key] = DAY_REFUSAL
            return None

        group = query.get("what", "")
        since, until = day("since"), day("until")
        if since and until and since > until:
            errors["since"] = ORDER_REFUSAL
        return cls(
            # Who: as typed, minus what no name holds (a NUL byte never reaches a query).
            actor=plain_text.header_safe(query.get("who", ""))[:150],
            group=group if group in GROUPS else "",
            since=since,
            until=until,
            errors=errors,
        )

    def apply(self, events: QuerySet[AuditEvent]) -> QuerySet[AuditEvent]:
        if self.actor:
            events = events.filter(actor_label__iexact=self.actor)
        if self.group:
            events = events.filter(action__startswith=GROUPS[self.group][1])
        zone = timezone.get_current_timezone()
        if self.since:
            events = events.filter(created_at__gte=datetime.combine(self.since, time(), zone))
        if self.until and self.until < date.max:  # up to the calendar's last day: no bound
            end = datetime.combine(self.until + timedelta(days=1), time(), zone)
            events = events.filter(created_at__lt=end)
        return events

    def query(self) -> str:
        """The filters as a query string, for links that keep them (pages, the export)."""
        pairs = {
            "who": self.actor,
            "what": self.group,
            "since": self.since.isoformat() if self.since else "",
            "until": self.until.isoformat() if self.until else "",
        }
        return urlencode({key: value for key, value in pairs.items() if value})


def _cell(text: str) -> str:
    """A spreadsheet must not take a cell for a formula (CSV injection)."""
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


class _Echo:
    def write(self, value: str) -> str:
        return value


def csv_rows(events: Iterable[AuditEvent]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(["time (UTC)", "who", "what", "target", "details"])
    for event in events:
        yield writer.writerow(
            [
                event.created_at.astimezone(UTC).isoformat(timespec="seconds"),
                _cell(event.actor_display),
                _cell(event.get_action_display()),
                _cell(target_text(event)),
                _cell(details_text(event)),
            ]
        )
