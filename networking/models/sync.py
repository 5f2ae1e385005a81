"""Sync bookkeeping: what the last pass applied, the watcher's heartbeat, and each pass's
outcome, so pages can say whether the cluster has caught up."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from django.db import models
from django.db.models import F, Subquery
from django.utils import timezone

if TYPE_CHECKING:
    pass


class AppliedRecord(models.Model):
    """What the last reconcile pass of a project applied: a digest of each object it owns.

    A pass compares the next desired state with this record and writes only what differs,
    without reading the cluster, as long as the record can be trusted. It cannot be (``digests``
    is None) before the first pass, after a failed one, and whenever the watcher sees the
    cluster differ or the periodic resync wants a project re-read: each of those moves
    ``version`` on, as every write does, so a pass that was already running when it happened
    fails to store its record (the store compares ``version``) and the next pass reads
    everything.

    A row of its own, not fields on ``Project``: at a thousand services it holds tens of
    kilobytes no page needs.
    """

    project = models.OneToOneField(
        "networking.Project",
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="applied_record",
    )
    digests = models.JSONField(null=True, blank=True, default=None)
    # Moved on by every write of the record, and when a pass records a service's ClusterIP.
    version = models.PositiveBigIntegerField(default=0)
    # The last writes, oldest first: [version, the record keys it may have changed (None: any),
    # whether it recorded ClusterIPs]. A worker that knows the record at an older version
    # reads only the digests written since (``lease.claim``), whichever worker wrote them.
    written = models.JSONField(default=list, blank=True)
    # Some service's workload was rolling out when a pass last read the workloads: until one
    # sees them all rolled out, every pass reads them (a rotation waits on them).
    rolling_out = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"applied record of project {self.project_id}"

    @classmethod
    def distrust(cls, project_ids: Iterable[int]) -> int:
        """The cluster may differ from these projects' records: their next passes read it."""
        return cls.objects.filter(project_id__in=list(project_ids)).update(
            digests=None, version=F("version") + 1, written=[]
        )


class WatcherHeartbeat(models.Model):
    """When a watcher last said it is watching the cluster: one row, whatever the fleet.

    On SQLite only (``make run``): there a pass trusts its applied record only while this is
    fresh. PostgreSQL has a better signal, a lock the watcher holds on its own connection
    (``networking.cluster.liveness``), which CPU starvation cannot make stale.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    seen_at = models.DateTimeField()

    # A watcher beats every BEAT; three missed beats and the passes stop trusting records.
    BEAT: ClassVar[timedelta] = timedelta(seconds=2)
    STALE_AFTER: ClassVar[timedelta] = timedelta(seconds=6)

    def __str__(self) -> str:
        return f"watcher seen at {self.seen_at:%Y-%m-%d %H:%M:%S}"

    @classmethod
    def beat(cls) -> None:
        """One statement (an upsert), whatever the number of projects."""
        WatcherHeartbeat.objects.bulk_create(
            [WatcherHeartbeat(pk=1, seen_at=timezone.now())],
            update_conflicts=True,
            update_fields=["seen_at"],
            unique_fields=["id"],
        )

    @classmethod
    def watching(cls, seen_at: Any) -> bool:
        """Whether a heartbeat read as ``seen_at`` (None: never) says a watcher is watching."""
        return seen_at is not None and timezone.now() - seen_at < cls.STALE_AFTER


class ApplyAttempt(models.Model):
    """One reconcile pass that changed something or failed: the sync history of a project.

    Passes that found the cluster already in sync only move ``Project.verified_at``.
    """

    class Result(models.TextChoices):
        APPLIED = "applied", "Applied"
        FAILED = "failed", "Failed"

    KEEP_PER_PROJECT: ClassVar[int] = 50

    project = models.ForeignKey(
        "networking.Project", on_delete=models.CASCADE, related_name="apply_attempts"
    )
    generation = models.PositiveBigIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField()
    result = models.CharField(max_length=20, choices=Result)
    changes = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [models.Index(fields=["project", "-started_at"], name="attempts_by_project")]

    def __str__(self) -> str:
        return f"{self.get_result_display()} generation {self.generation}"

    @classmethod
    def record(cls, **fields: Any) -> ApplyAttempt:
        attempt = cls.objects.create(**fields)
        # Keep the newest KEEP_PER_PROJECT: drop the first id past them and older, in one
        # statement (no row past them: the subquery is NULL and nothing matches).
        first_dropped = (
            cls.objects.filter(project_id=attempt.project_id)
            .order_by("-id")
            .values("id")[cls.KEEP_PER_PROJECT : cls.KEEP_PER_PROJECT + 1]
        )
        cls.objects.filter(project_id=attempt.project_id, id__lte=Subquery(first_dropped)).delete()
        return attempt
