from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path

from dashboard import peering_views, secret_views, views
from dashboard.auth import SignInView

urlpatterns = [
    path("", views.home, name="home"),
    path("accounts/login/", SignInView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("projects/", views.project_list, name="project-list"),
    path("orgs/<slug:org_slug>/projects/new/", views.project_create, name="project-create"),
    path("projects/<str:project_uid>/", views.project_overview, name="project-overview"),
    path("projects/<str:project_uid>/settings/", views.project_settings, name="project-settings"),
    path("projects/<str:project_uid>/audit/", views.audit_log, name="audit-log"),
    path("projects/<str:project_uid>/sync/", views.project_sync, name="project-sync"),
    path(
        "projects/<str:project_uid>/sync/status/",
        views.project_sync_status,
        name="project-sync-status",
    ),
    path(
        "projects/<str:project_uid>/sync/retry/",
        views.project_sync_retry,
        name="project-sync-retry",
    ),
    path("projects/<str:project_uid>/services/new/", views.service_create, name="service-create"),
    path(
        "projects/<str:project_uid>/services/name-preview/",
        views.service_name_preview,
        name="service-name-preview",
    ),
    path(
        "projects/<str:project_uid>/services/<int:service_id>/",
        views.service_detail,
        name="service-detail",
    ),
    path(
        "projects/<str:project_uid>/services/<int:service_id>/edit/",
        views.service_edit,
        name="service-edit",
    ),
    path(
        "projects/<str:project_uid>/services/<int:service_id>/delete/",
        views.service_delete,
        name="service-delete",
    ),
    path(
        "projects/<str:project_uid>/services/<int:service_id>/reveal/",
        views.service_reveal,
        name="service-reveal",
    ),
    path("projects/<str:project_uid>/secrets/", secret_views.secret_list, name="secret-list"),
    path(
        "projects/<str:project_uid>/secrets/new/",
        secret_views.secret_create,
        name="secret-create",
    ),
    path(
        "projects/<str:project_uid>/secrets/<int:secret_id>/",
        secret_views.secret_detail,
        name="secret-detail",
    ),
    path(
        "projects/<str:project_uid>/secrets/<int:secret_id>/edit/",
        secret_views.secret_edit,
        name="secret-edit",
    ),
    path(
        "projects/<str:project_uid>/secrets/<int:secret_id>/reveal/",
        secret_views.secret_reveal,
        name="secret-reveal",
    ),
    path(
        "projects/<str:project_uid>/secrets/<int:secret_id>/rotate/",
        secret_views.secret_rotate,
        name="secret-rotate",
    ),
    path(
        "projects/<str:project_uid>/secrets/<int:secret_id>/delete/",
        secret_views.secret_delete,
        name="secret-delete",
    ),
    path(
        "projects/<str:project_uid>/peering/",
        peering_views.project_peering,
        name="project-peering",
    ),
    path(
        "projects/<str:project_uid>/peering/request/",
        peering_views.peering_request,
        name="peering-request",
    ),
    path(
        "projects/<str:project_uid>/peering/<int:peering_id>/accept/",
        peering_views.peering_accept,
        name="peering-accept",
    ),
    path(
        "projects/<str:project_uid>/peering/<int:peering_id>/cancel/",
        peering_views.peering_cancel,
        name="peering-cancel",
    ),
    path(
        "projects/<str:project_uid>/peering/<int:peering_id>/revoke/",
        peering_views.peering_revoke,
        name="peering-revoke",
    ),
    path("support/peering/", peering_views.support_queue, name="support-queue"),
    path(
        "support/peering/<int:peering_id>/approve/",
        peering_views.support_approve,
        name="support-approve",
    ),
    path(
        "support/peering/<int:peering_id>/reject/",
        peering_views.support_reject,
        name="support-reject",
    ),
]
