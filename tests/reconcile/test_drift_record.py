"""What the watcher saw differ is kept on the project, for its pages, until a pass repairs it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from django.utils import timezone

from networking import passes as reconciler
from networking.cluster.drift import Difference
from networking.models import AppliedRecord, Project
from tests.conftest import World

POLICY = {
    "kind": "NetworkPolicy",
    "name": "project-isolation",
    "text": "NetworkPolicy project-isolation differs",
}
SERVICE = {"kind": "Service", "name": "api", "text": "Service api is missing"}
CLUSTER_IP = {"kind": "", "name": "", "text": "ClusterIP of api to record"}


def fresh(project: Project) -> Project:
    return Project.objects.get(pk=project.pk)


def test_a_difference_is_still_its_words_and_knows_its_object() -> None:
    difference = Difference("NetworkPolicy peer-prj-x differs", kind="NetworkPolicy", name="x")
    assert difference == "NetworkPolicy peer-prj-x differs"
    assert difference.in_cluster
    assert difference.record() == {
        "kind": "NetworkPolicy",
        "name": "x",
        "text": "NetworkPolicy peer-prj-x differs",
    }
    assert not Difference("ClusterIP of api to record").in_cluster


def test_it_keeps_what_differs_in_the_cluster_and_moves_open_pages_on(world: World) -> None:
    before = fresh(world.project).revision
    world.project.report_drift([POLICY, CLUSTER_IP])
    project = fresh(world.project)
    assert project.drift == [POLICY]
    assert project.drift_objects == {("NetworkPolicy", "project-isolation")}
    assert project.drift_seen_at is not None
    assert project.revision > before


def test_it_still_asks_for_a_full_pass(world: World) -> None:
    AppliedRecord.objects.create(project=world.project, digests={"Service/api": "x"})
    assert world.project.report_drift([POLICY])
    assert AppliedRecord.objects.get(project=world.project).digests is None
    assert fresh(world.project).reconcile_queued_at is not None


def test_a_record_to_write_is_no_drift(world: World) -> None:
    before = fresh(world.project).revision
    world.project.report_drift([CLUSTER_IP])
    project = fresh(world.project)
    assert project.drift == []
    assert project.drift_seen_at is None
    assert project.revision == before


def test_a_later_look_adds_to_what_is_kept_by_object(world: World) -> None:
    world.project.report_drift([POLICY])
    # A look at one service must not hide the policy seen differing before.
    world.project.report_drift([SERVICE])
    world.project.report_drift([{**SERVICE, "text": "Service api differs"}])
    assert fresh(world.project).drift == [POLICY, {**SERVICE, "text": "Service api differs"}]


def test_it_keeps_a_bounded_list_and_says_how_many_more(world: World) -> None:
    many = [
        {"kind": "Service", "name": f"svc-{index}", "text": f"Service svc-{index} is missing"}
        for index in range(Project.DRIFT_KEPT + 50)
    ]
    world.project.report_drift(many)
    drift = fresh(world.project).drift
    assert len(drift) == Project.DRIFT_KEPT
    assert drift[-1] == {"kind": "", "name": "", "text": "and 51 more", "more": 51}
    # What did not fit stays counted, once, and what is kept can still change.
    world.project.report_drift([POLICY, {**many[0], "text": "Service svc-0 differs"}])
    drift = fresh(world.project).drift
    assert [record for record in drift if not record["kind"]] == [
        {"kind": "", "name": "", "text": "and 52 more", "more": 52}
    ]
    assert drift[0]["text"] == "Service svc-0 differs"


def test_a_pass_that_read_the_whole_namespace_clears_it(world: World, manifests: Path) -> None:
    world.project.report_drift([POLICY])
    before = fresh(world.project).revision
    reconciler.reconcile(world.project.pk)
    project = fresh(world.project)
    assert project.drift == []
    assert project.drift_seen_at is None
    assert project.revision > before


def test_drift_seen_after_a_pass_began_is_left_for_the_next_one(world: World) -> None:
    world.project.report_drift([POLICY])
    began = timezone.now() - timedelta(seconds=1)
    assert not Project.clear_drift(world.project.pk, seen_before=began)
    assert fresh(world.project).drift == [POLICY]
    assert Project.clear_drift(world.project.pk, seen_before=timezone.now())
    assert fresh(world.project).drift == []


def test_a_project_without_drift_writes_nothing_more_on_a_pass(
    world: World, manifests: Path
) -> None:
    reconciler.reconcile(world.project.pk)
    assert not Project.clear_drift(world.project.pk, seen_before=timezone.now())
