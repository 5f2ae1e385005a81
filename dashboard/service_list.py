"""The project overview's list of services: search, filters, sorting and pages, in the URL.

A project may hold thousands of services, so the overview shows one page of them at a time and
every choice lives in the query string: a link or the back button brings back the same view.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlencode

from django.db.models import Q, QuerySet

from networking import naming, plain_text
from networking.models import Service

PAGE_SIZE = 50

# What a column header sorts by, and how: the name always breaks ties.
SORTS: dict[str, tuple[str, ...]] = {
    "name": ("name",),
    "-name": ("-name",),
    "kind": ("kind", "name"),
    "-kind": ("-kind", "name"),
    "address": ("cluster_ip", "name"),
    "-address": ("-cluster_ip", "name"),
    "newest": ("-created_at", "-pk"),
}
# The Status column: in the cluster with an address, in the cluster (an address to come, or
# none from the manifests backend), or a change still on its way there.
STATUS_CHOICES = dict(Service.Status.choices)


def _search_term(text: str) -> str:
    """What a search for a hostname or an address looks for: ``api.internal:8080`` is ``api``."""
    term = text.strip().lower()
    host, _, port = term.rpartition(":")
    if host and port.isdecimal():
        term = host
    return term.removesuffix(f".{naming.INTERNAL_ZONE}")


@dataclass(frozen=True)
class Filters:
    query: str = ""
    kind: str = ""
    status: str = ""
    sort: str = "name"

    @classmethod
    def from_query(cls, params: Any) -> Filters:
        kind = str(params.get("kind", ""))
        status = str(params.get("status", ""))
        sort = str(params.get("sort", "name"))
        return cls(
            # As typed, minus what no name holds (a NUL byte never reaches a query).
            query=plain_text.header_safe(str(params.get("q", "")))[:100],
            kind=kind if kind in Service.Kind.values else "",
            status=status if status in STATUS_CHOICES else "",
            sort=sort if sort in SORTS else "name",
        )

    @property
    def active(self) -> bool:
        """Whether anything narrows the list (sorting does not)."""
        return bool(self.query or self.kind or self.status)

    def apply(self, services: QuerySet[Service], applied_generation: int) -> QuerySet[Service]:
        """``applied_generation``: the project's, which says which rows are still pending."""
        if self.query:
            term = _search_term(self.query)
            services = services.filter(
                Q(name__icontains=term) | Q(display_name__icontains=self.query.strip())
            )
        if self.kind:
            services = services.filter(kind=self.kind)
        if self.status:
            services = services.filter(Service.having_status(self.status, applied_generation))
        return services.order_by(*SORTS[self.sort])

    def params(self, **changes: Any) -> dict[str, str]:
        """The query string's parameters (defaults left out), with ``changes`` made."""
        current = replace(self, **changes)
        return {
            key: value
            for key, value in (
                ("q", current.query),
                ("kind", current.kind),
                ("status", current.status),
                ("sort", "" if current.sort == "name" else current.sort),
            )
            if value
        }

    def query_string(self, **changes: Any) -> str:
        return urlencode(self.params(**changes))

    def sort_link(self, column: str) -> str:
        """The query that sorts by ``column``, the other way round if it already does."""
        sort = f"-{column}" if self.sort == column else column
        return self.query_string(sort=sort)

    def sorted_by(self, column: str) -> str:
        """``ascending``, ``descending`` or ``none``: for ``aria-sort``."""
        if self.sort == column:
            return "ascending"
        if self.sort == f"-{column}":
            return "descending"
        return "none"
