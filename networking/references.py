"""Reference variables: a service's address handed to other services of its project.

"Use in another service" on a database's page gives, say, ``api`` the variable
``DATABASE_URL`` set to the database's connection string; on a web or private service's page,
its internal URL. The worker delivers the value from the project's Secret (never a task message
or a page) and restarts the consumer once whenever the value changes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from networking import endpoints, rotation
from networking.models import (
    AuditEvent,
    Project,
    ReferenceVariable,
    Service,
    SharedSecret,
)

# The variable a consumer gets by default, by the source's kind; services get NAME_URL.
DEFAULT_VARIABLES = {
    Service.Kind.POSTGRESQL: "DATABASE_URL",
    Service.Kind.MYSQL: "MYSQL_URL",
    Service.Kind.REDIS: "REDIS_URL",
    Service.Kind.MONGODB: "MONGODB_URL",
}


def own_variable(source: Service) -> str:
    """``ORDERS_DB_URL`` for a service named ``orders-db``: as the service page suggests."""
    return endpoints.own_env_name(source)


def can_be_used(source: Service) -> bool:
    """Whether the service has an address to hand out (a database, or a service with a port)."""
    return source.is_database or bool(source.ports)


def value_of(source: Service) -> str:
    """What the consumer gets: a database's full connection string, or the internal URL."""
    if source.is_database:
        return endpoints.connection_string(source, reveal=True)
    return endpoints.internal_url(source, source.ports[0])


def version_of(value: str, key: bytes) -> str:
    """A short keyed digest of a value: it changes when the value does, and tells nothing of
    it (it is written on the consumer's pod template, where anyone reading it sees it)."""
    return hashlib.blake2b(value.encode(), digest_size=6, key=key).hexdigest()


def taken_on(consumer: Service) -> dict[str, str]:
    """The variables the platform already sets on ``consumer``, with what sets each."""
    taken = {}
    for name in SharedSecret.objects.filter(services=consumer).values_list("name", flat=True):
        for variable, _ in rotation.environment_names(name):
            taken[variable] = f"the shared secret {name}"
    for variable, source in ReferenceVariable.objects.filter(consumer=consumer).values_list(
        "variable", "source__name"
    ):
        taken[variable] = f"the address of {source}"
    return taken


def suggested_variable(source: Service, consumer: Service) -> str:
    """The kind's usual name if the consumer has it free, else one of the source's own."""
    taken = taken_on(consumer)
    own = own_variable(source)
    candidates = [DEFAULT_VARIABLES.get(Service.Kind(source.kind), own), own]
    for candidate in candidates:
        if candidate not in taken:
            return candidate
    number = 2
    while f"{own.removesuffix('_URL')}_{number}_URL" in taken:
        number += 1
    return f"{own.removesuffix('_URL')}_{number}_URL"


def add(
    source: Service, consumers: Iterable[Service], variable: str, *, actor: Any
) -> list[ReferenceVariable]:
    """Give each consumer ``variable`` (empty: the suggested name) set to ``source``'s address.

    All or nothing: a clash on any consumer refuses the whole request with the reason, as a
    ``ValidationError`` keyed by field. Twenty identical requests make one link per consumer.
    """
    if not can_be_used(source):
        raise ValidationError(
            {"consumers": [f"{source.display_name} has no port, so no address to hand out."]}
        )
    chosen = list(consumers)
    if not chosen:
        raise ValidationError({"consumers": ["Choose the services that should receive it."]})
    if any(consumer.pk == source.pk for consumer in chosen):
        raise ValidationError(
            {"consumers": [f"{source.display_name} can’t be given its own address."]}
        )
    variable = variable.strip()
    if variable:
        try:
            rotation.validate_variable_name(variable, example="DATABASE_URL")
        except ValidationError as error:
            raise ValidationError({"variable": error.messages}) from None
    project = source.project
    made = []
    try:
        with transaction.atomic():
            locked = Service.lock_chosen(project, [source, *chosen])
            if source.pk not in {service.pk for service in locked}:
                raise ValidationError(
                    {"consumers": [f"{source.display_name} was deleted meanwhile."]}
                )
            for consumer in sorted(chosen, key=lambda service: service.name):
                existing = ReferenceVariable.objects.filter(source=source, consumer=consumer)
                if existing.exists():
                    raise ValidationError(
                        {
                            "consumers": ValidationError(
                                f"{consumer.name} already receives the address of {source.name} "
                                f"as {existing.values_list('variable', flat=True).get()}.",
                                code="duplicate",
                            )
                        }
                    )
                name = variable or suggested_variable(source, consumer)
                clash = taken_on(consumer).get(name)
                if clash is not None:
                    raise ValidationError(
                        {
                            "variable": ValidationError(
                                f"{consumer.name} already gets {name} from {clash}. Choose "
                                "another variable name.",
                                code="clash",
                            )
                        }
                    )
                made.append(
                    ReferenceVariable.objects.create(
                        project=project, source=source, consumer=consumer, variable=name
                    )
                )
                project.record_change(
                    actor=actor,
                    action=AuditEvent.Action.REFERENCE_ADDED,
                    target=consumer.name,
                    details={"source": source.name, "variable": name},
                )
    except IntegrityError:
        # Another request made the same link at the same moment: it is there, once.
        raise ValidationError(
            {
                "consumers": ValidationError(
                    "That was just done by another request: nothing changed.", code="duplicate"
                )
            }
        ) from None
    return made


def remove(reference: ReferenceVariable, *, actor: Any) -> bool:
    """Take the variable back from the consumer (it restarts once); False if already gone."""
    with transaction.atomic():
        # The project's row first, as every change takes it; then the variable's row alone
        # (``of``: not the services it joins).
        Project.objects.select_for_update().filter(pk=reference.project_id).values_list(
            "pk"
        ).first()
        stored = (
            ReferenceVariable.objects.select_for_update(of=("self",))
            .select_related("source", "consumer")
            .filter(pk=reference.pk)
            .first()
        )
        if stored is None:
            return False
        stored.delete()
        Project.objects.get(pk=stored.project_id).record_change(
            actor=actor,
            action=AuditEvent.Action.REFERENCE_REMOVED,
            target=stored.consumer.name,
            details={"source": stored.source.name, "variable": stored.variable},
        )
    return True
