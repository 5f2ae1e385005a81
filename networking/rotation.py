"""Shared secrets and their rotation without downtime.

Every service that receives a secret ``NAME`` gets three environment variables from the
project's Kubernetes Secret: ``NAME`` (the value to send), and ``NAME_NEXT`` and
``NAME_PREVIOUS`` (further values to accept, present only during a rotation). A verifier
accepts a request whose header matches any of the three.

A rotation from value A to value B has three phases, each a change of the Secret followed by
one rolling restart of every receiving workload (a pod-template annotation carries the
secret's ``version``), and each phase starts only when every receiving workload has finished
rolling out the previous one:

1. accept new: ``NAME=A, NAME_NEXT=B``. Everyone still sends A; pods accept A, or A and B.
2. send new:   ``NAME=B, NAME_PREVIOUS=A``. Pods send A or B; every pod already accepts both.
   Then a grace window (default 15 minutes) for requests already in flight with A.
3. retire old: ``NAME=B``. Nobody sends A any more; pods accept B, or B and A.

At no moment does any pod send a value another pod refuses, whatever order the workloads
restart in (``tests/domain/test_rotation_protocol.py`` checks every interleaving).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Collection, Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from networking.crypto import SecretText
from networking.models import (
    AuditEvent,
    Notification,
    SecretRotation,
    SharedSecret,
    actor_label,
)

NEXT_SUFFIX = "_NEXT"
PREVIOUS_SUFFIX = "_PREVIOUS"
MAX_VALUE_LENGTH = 4096
MIN_PASTED_LENGTH = 16

_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")
# Set by the platform or Kubernetes in every container: a secret must not shadow them.
RESERVED_NAMES = frozenset(
    {"PATH", "HOME", "HOSTNAME", "PORT", "PWD", "SHELL", "USER", "TERM", "LANG", "TZ", "TMPDIR"}
)
RESERVED_PREFIXES = ("KUBERNETES_", "STACKBLAZE_")


def validate_variable_name(name: str, *, example: str = "INTERNAL_API_SECRET") -> str:
    """An environment-variable name the platform may set in a project's containers."""
    name = name.strip()
    if not name:
        raise ValidationError(f"Enter a name, like {example}.", code="empty")
    if len(name) > 100:
        raise ValidationError("Keep the name under 100 characters.", code="too_long")
    if not _NAME_RE.match(name):
        suggestion = re.sub(r"[^A-Z0-9_]", "_", name.upper()).lstrip("0123456789")
        hint = f" Try {suggestion}." if suggestion and _NAME_RE.match(suggestion) else ""
        raise ValidationError(
            "Use upper-case letters, digits and underscores, not starting with a digit "
            f"(a POSIX environment variable name).{hint}",
            code="invalid",
        )
    if name in RESERVED_NAMES or name.startswith(RESERVED_PREFIXES):
        raise ValidationError(
            f"{name} is set by the platform in every container; choose another name.",
            code="reserved",
        )
    return name


def validate_secret_name(name: str) -> str:
    """An environment-variable name a project may use for a shared secret."""
    name = validate_variable_name(name)
    if name.endswith((NEXT_SUFFIX, PREVIOUS_SUFFIX)):
        raise ValidationError(
            f"Names ending in {NEXT_SUFFIX} or {PREVIOUS_SUFFIX} are used during rotations; "
            "choose another name.",
            code="reserved",
        )
    return name


# The rules above as patterns, for the API's OpenAPI document (a name as typed, untrimmed).
_NOT_RESERVED = "(?!(?:{}){})(?!{})".format(
    "|".join(sorted(RESERVED_NAMES)), "$", "|".join(RESERVED_PREFIXES)
)
VARIABLE_NAME_PATTERN = f"^{_NOT_RESERVED}[A-Z_][A-Z0-9_]{{0,99}}$"
SECRET_NAME_PATTERN = (
    f"^{_NOT_RESERVED}(?![A-Z0-9_]*(?:{NEXT_SUFFIX}|{PREVIOUS_SUFFIX})$)[A-Z_][A-Z0-9_]{{0,99}}$"
)
# A pasted value as ``validate_pasted_value`` takes it: 16 to 4096 characters, no line break
# and no NUL.
PASTED_VALUE_PATTERN = f"^[^\\r\\n\\u0000]{{{MIN_PASTED_LENGTH},{MAX_VALUE_LENGTH}}}$"


def validate_pasted_value(value: str) -> str:
    if len(value) < MIN_PASTED_LENGTH:
        raise ValidationError(
            f"A pasted value must be at least {MIN_PASTED_LENGTH} characters; or leave the "
            "field empty to generate a random 256-bit value.",
            code="too_short",
        )
    if len(value) > MAX_VALUE_LENGTH:
        raise ValidationError(
            f"Keep the value under {MAX_VALUE_LENGTH} characters.", code="too_long"
        )
    if any(ch in value for ch in "\r\n\x00"):
        raise ValidationError("The value can't contain line breaks.", code="invalid")
    return value


def generate_value() -> str:
    """A random value with 256 bits of entropy, safe in headers and URLs."""
    return secrets.token_urlsafe(32)


def environment(secret: SharedSecret) -> dict[str, SecretText]:
    """The environment variables a receiving workload gets for ``secret`` right now."""
    assert secret.value is not None
    env = {secret.name: secret.value}
    if secret.next_value is not None:
        env[secret.name + NEXT_SUFFIX] = secret.next_value
    if secret.previous_value is not None:
        env[secret.name + PREVIOUS_SUFFIX] = secret.previous_value
    return env


def environment_names(name: str) -> list[tuple[str, bool]]:
    """(variable, optional) for every variable a workload references for secret ``name``."""
    return [(name, False), (name + NEXT_SUFFIX, True), (name + PREVIOUS_SUFFIX, True)]


class RotationRefused(Exception):
    """A rotation cannot start; ``str()`` says why, for the user."""


def _phase_log(rotation: SecretRotation, phase: str, now: datetime) -> None:
    rotation.phases = [*rotation.phases, {"phase": phase, "at": now.isoformat()}]


def start_rotation(
    secret: SharedSecret, *, actor: Any, new_value: str | None = None
) -> SecretRotation:
    """Begin phase 1. Refused while another rotation of the same secret runs."""
    now = timezone.now()
    with transaction.atomic():
        locked = SharedSecret.objects.select_for_update().get(pk=secret.pk)
        if locked.rotating:
            raise RotationRefused(
                f"{locked.name} is already being rotated ({locked.get_rotation_phase_display()}"
                "). Wait for that rotation to finish before starting another."
            )
        locked.next_value = SecretText.seal(new_value or generate_value())
        locked.rotation_phase = SharedSecret.Phase.ACCEPT_NEW
        locked.phase_started_at = now
        locked.version += 1
        locked.save(update_fields=["next_value", "rotation_phase", "phase_started_at", "version"])
        rotation = SecretRotation(
            secret=locked,
            started_by=actor if actor is not None and actor.is_authenticated else None,
            started_by_label=actor_label(actor, nobody="the schedule"),
        )
        _phase_log(rotation, SharedSecret.Phase.ACCEPT_NEW, now)
        rotation.save()
        locked.project.record_change(
            actor=actor,
            action=AuditEvent.Action.ROTATION_STARTED,
            target=locked.name,
            details={"trigger": "manual" if actor is not None else "schedule"},
        )
    secret.refresh_from_db()
    return rotation


def advance(secret_id: int, *, now: datetime | None = None) -> str | None:
    """Move a rotation to its next phase; the new phase, or None if it must wait.

    The caller has checked that every workload receiving the secret runs its current
    version; only the grace window is checked here.
    """
    now = now or timezone.now()
    with transaction.atomic():
        secret = SharedSecret.objects.select_for_update().filter(pk=secret_id).first()
        if secret is None or not secret.rotating:
            return None
        phase = secret.rotation_phase
        fields = ["rotation_phase", "phase_started_at"]
        if phase == SharedSecret.Phase.ACCEPT_NEW:
            assert secret.next_value is not None
            secret.previous_value, secret.value = secret.value, secret.next_value
            secret.next_value = None
            secret.version += 1
            secret.rotation_phase = SharedSecret.Phase.SEND_NEW
            fields += ["previous_value", "value", "next_value", "version"]
        elif phase == SharedSecret.Phase.SEND_NEW:
            # The grace window is for senders the cluster does not show us (a job started
            # before the rotation, a request already on its way). With no receiving service
            # running a workload, nothing could have the old value to send: no wait.
            # None: no grace left to wait out.
            secret.grace_until = (
                now + timedelta(seconds=settings.ROTATION_GRACE_SECONDS)
                if _receivers_run_workloads(secret)
                else None
            )
            secret.rotation_phase = SharedSecret.Phase.GRACE
            fields += ["grace_until"]
        elif phase == SharedSecret.Phase.GRACE:
            if secret.grace_until is not None and now < secret.grace_until:
                return None
            secret.previous_value = None
            secret.version += 1
            secret.grace_until = None
            secret.rotation_phase = SharedSecret.Phase.RETIRE_OLD
            fields += ["previous_value", "version", "grace_until"]
        else:  # RETIRE_OLD has rolled out: done
            secret.rotation_phase = ""
            secret.last_rotated_at = now
            fields += ["last_rotated_at"]
        secret.phase_started_at = now
        secret.save(update_fields=fields)
        Notification.end_rotation_wait(secret.pk)  # no longer waiting on that phase's rollout
        rotation = secret.rotations.filter(result=SecretRotation.Result.IN_PROGRESS).first()
        if rotation is not None:
            _phase_log(rotation, secret.rotation_phase or "completed", now)
            if not secret.rotation_phase:
                rotation.result = SecretRotation.Result.COMPLETED
                rotation.finished_at = now
            rotation.save(update_fields=["phases", "result", "finished_at"])
        secret.project.record_change(
            actor=None,
            action=(
                AuditEvent.Action.ROTATION_PHASE
                if secret.rotation_phase
                else AuditEvent.Action.ROTATION_COMPLETED
            ),
            target=secret.name,
            details={"phase": secret.rotation_phase or "completed"},
        )
        return secret.rotation_phase or "completed"


def _receivers_run_workloads(secret: SharedSecret) -> bool:
    """Whether any service that receives the secret has a workload deployed."""
    return any(service.workload for service in secret.services.only("workload"))


def end_grace(secret: SharedSecret, *, actor: Any) -> bool:
    """An owner ends the grace window now: the old value is retired at the next pass.

    False if there was no grace window to end (the rotation moved on meanwhile).
    """
    with transaction.atomic():
        locked = SharedSecret.objects.select_for_update().filter(pk=secret.pk).first()
        now = timezone.now()
        if (
            locked is None
            or locked.rotation_phase != SharedSecret.Phase.GRACE
            or locked.grace_until is None  # none left, or ended by another click
            or locked.grace_until <= now
        ):
            return False
        left = int((locked.grace_until - now).total_seconds())
        locked.grace_until = None
        locked.save(update_fields=["grace_until"])
        locked.project.record_change(
            actor=actor,
            action=AuditEvent.Action.ROTATION_GRACE_ENDED,
            target=locked.name,
            details={"seconds_left": left},
        )
    secret.refresh_from_db()
    return True


def advance_ready(
    shared_secrets: Iterable[SharedSecret], still_rolling_out: Collection[str]
) -> float | None:
    """Move every rotation whose receiving workloads have all rolled out to its next phase.

    ``shared_secrets`` are a project's shared secrets (their receiving services prefetched);
    ``still_rolling_out`` names the services whose workloads do not all run the secrets'
    current version yet, as the cluster reported them. Returns when to look again (rollouts
    still running, or a grace window), or None.
    """
    recheck_in: float | None = None
    for secret in shared_secrets:
        if not secret.rotating:
            continue
        waiting_on = [
            service.name for service in secret.services.all() if service.name in still_rolling_out
        ]
        if waiting_on:
            delay = float(settings.ROTATION_POLL_SECONDS)
            # Waited too long on a rollout: told in the header, once per phase.
            Notification.announce_rotation_stuck(secret, waiting_on)
        elif advance(secret.pk) is None and secret.grace_until is not None:
            delay = max((secret.grace_until - timezone.now()).total_seconds(), 0.0) + 0.5
        else:
            continue  # advanced: the new generation gets its own pass right away
        recheck_in = delay if recheck_in is None else min(recheck_in, delay)
    return recheck_in


def start_due_rotations() -> int:
    """Start the scheduled rotations that are due; how many started."""
    started = 0
    for secret in due_for_rotation():
        try:
            start_rotation(secret, actor=None)
        except RotationRefused:
            continue  # started by someone in the meantime
        started += 1
    return started


def due_for_rotation(now: datetime | None = None) -> list[SharedSecret]:
    """Secrets on a schedule whose last rotation (or creation) is old enough."""
    now = now or timezone.now()
    due = []
    candidates = SharedSecret.objects.filter(
        rotate_every_days__isnull=False, rotation_phase=""
    ).select_related("project")
    for secret in candidates:
        assert secret.rotate_every_days is not None
        since = secret.last_rotated_at or secret.created_at
        if since + timedelta(days=secret.rotate_every_days) <= now:
            due.append(secret)
    return due


def verifier_snippets(name: str) -> dict[str, str]:
    """Ready-to-paste code that accepts ``name`` and, during a rotation, its other value.

    Every language compares SHA-256 digests in constant time against each accepted value, so
    neither the length nor the content of a guess leaks through timing.
    """
    names = [variable for variable, _ in environment_names(name)]
    python_check = (
        "import hashlib\n"
        "import hmac\n"
        "import os\n\n"
        f"ACCEPTED_VARIABLES = {tuple(names)!r}\n\n\n"
        "def internal_secret_ok(presented):\n"
        f'    """True if the header matches a value {name} accepts (constant time).\n\n'
        "    During a rotation the platform sets a second accepted value, so no caller is\n"
        '    refused while services restart one by one."""\n'
        '    digest = hashlib.sha256((presented or "").encode()).digest()\n'
        "    ok = False\n"
        "    for variable in ACCEPTED_VARIABLES:\n"
        "        value = os.environ.get(variable)\n"
        "        if value:\n"
        "            ok |= hmac.compare_digest(digest, hashlib.sha256(value.encode()).digest())\n"
        "    return ok\n"
    )
    return {
        "Node.js (Express)": (
            "const crypto = require('crypto')\n\n"
            f"// {name}, and during a rotation {names[1]} or {names[2]}.\n"
            f"const ACCEPTED_VARIABLES = {names!r}\n"
            "const sha256 = (text) => crypto.createHash('sha256').update(text).digest()\n\n"
            "function verifyInternalSecret(req, res, next) {\n"
            "  const presented = sha256(String(req.headers['x-internal-secret'] || ''))\n"
            "  // Check every accepted value in constant time, without stopping early.\n"
            "  const ok = ACCEPTED_VARIABLES\n"
            "    .map((variable) => process.env[variable])\n"
            "    .filter(Boolean)\n"
            "    .reduce((found, value) => crypto.timingSafeEqual(presented, sha256(value)) "
            "|| found, false)\n"
            "  if (!ok) return res.status(403).json({ error: 'Forbidden' })\n"
            "  next()\n"
            "}\n\n"
            "app.use('/internal', verifyInternalSecret)\n"
        ),
        "Python (Django)": (
            python_check + "\n\nfrom django.http import JsonResponse\n\n\n"
            "class InternalSecretMiddleware:\n"
            "    def __init__(self, get_response):\n"
            "        self.get_response = get_response\n\n"
            "    def __call__(self, request):\n"
            '        if request.path.startswith("/internal/") and not internal_secret_ok(\n'
            '            request.headers.get("X-Internal-Secret")\n'
            "        ):\n"
            '            return JsonResponse({"error": "Forbidden"}, status=403)\n'
            "        return self.get_response(request)\n"
        ),
        "Python (Flask)": (
            python_check + "\n\nfrom flask import abort, request\n\n\n"
            "@app.before_request\n"
            "def check_internal_secret():\n"
            '    if request.path.startswith("/internal/") and not internal_secret_ok(\n'
            '        request.headers.get("X-Internal-Secret")\n'
            "    ):\n"
            "        abort(403)\n"
        ),
    }


PHASE_STEPS = (
    (
        SharedSecret.Phase.ACCEPT_NEW,
        "Accept the new value",
        "Every service restarts accepting both.",
    ),
    (SharedSecret.Phase.SEND_NEW, "Send the new value", "Every service restarts sending it."),
    (
        SharedSecret.Phase.GRACE,
        "Grace window",
        "Every service sends the new value now; the old one is still accepted for a while, "
        "for what the platform cannot see: a request already on its way, a job started before "
        "the rotation, a script with the old value.",
    ),
    (SharedSecret.Phase.RETIRE_OLD, "Retire the old value", "Every service restarts without it."),
)


def rotation_count(secret: SharedSecret) -> int:
    """How many times the secret has been rotated (the one under way included)."""
    return secret.rotations.count()


def phase_steps(secret: SharedSecret, *, completed: bool = False) -> list[dict[str, str]]:
    """The rotation's phases for display, each "done", "current" or "pending".

    ``completed``: no rotation runs and the last one completed: every phase is done."""
    order: list[str] = [phase for phase, _, _ in PHASE_STEPS]
    current = order.index(secret.rotation_phase) if secret.rotation_phase in order else None
    steps = []
    for index, (phase, title, detail) in enumerate(PHASE_STEPS):
        if current is None:
            state = "done" if completed else "pending"
        else:
            state = "done" if index < current else "current" if index == current else "pending"
        steps.append({"phase": phase, "title": title, "detail": detail, "state": state})
    return steps
