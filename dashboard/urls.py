from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import URLPattern, URLResolver, include, path, re_path, register_converter

from api.api import not_found as api_not_found
from api.api import urls as api_urls
from dashboard import (
    mtls_views,
    notification_views,
    peering_views,
    secret_views,
    team_views,
    token_views,
    views,
)
from dashboard.auth import SignInView
from networking.models import PROJECT_ID_PATTERN


class ProjectIDConverter:
    """A project ID as ``generate_project_uid`` makes them; anything else is a 404."""

    regex = PROJECT_ID_PATTERN

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(ProjectIDConverter, "project_id")

# Everything under /projects/<project_uid>/: each view fetches the project through
# networking.access, so another tenant's ID is a 404.
service_patterns = [
    path("new/", views.service_create, name="service-create"),
    path("name-preview/", views.service_name_preview, name="service-name-preview"),
    path("<int:service_id>/", views.service_detail, name="service-detail"),
    path("<int:service_id>/edit/", views.service_edit, name="service-edit"),
    path("<int:service_id>/delete/", views.service_delete, name="service-delete"),
    path("<int:service_id>/reveal/", views.service_reveal, name="service-reveal"),
    path(
        "<int:service_id>/connection-test/",
        views.service_connection_test,
        name="service-connection-test",
    ),
    path(
        "<int:service_id>/references/add/",
        views.service_reference_add,
        name="service-reference-add",
    ),
    path(
        "<int:service_id>/references/<int:reference_id>/remove/",
        views.service_reference_remove,
        name="service-reference-remove",
    ),
    path(
        "<int:service_id>/old-hostnames/<int:alias_id>/extend/",
        views.service_alias_extend,
        name="service-alias-extend",
    ),
    path(
        "<int:service_id>/old-hostnames/<int:alias_id>/end/",
        views.service_alias_end,
        name="service-alias-end",
    ),
    path(
        "<int:service_id>/mtls-callers/",
        mtls_views.service_mtls_callers,
        name="service-mtls-callers",
    ),
]
secret_patterns = [
    path("", secret_views.secret_list, name="secret-list"),
    path("new/", secret_views.secret_create, name="secret-create"),
    path("<int:secret_id>/", secret_views.secret_detail, name="secret-detail"),
    path("<int:secret_id>/edit/", secret_views.secret_edit, name="secret-edit"),
    path("<int:secret_id>/reveal/", secret_views.secret_reveal, name="secret-reveal"),
    path("<int:secret_id>/rotate/", secret_views.secret_rotate, name="secret-rotate"),
    path("<int:secret_id>/end-grace/", secret_views.secret_end_grace, name="secret-end-grace"),
    path("<int:secret_id>/delete/", secret_views.secret_delete, name="secret-delete"),
]
mtls_patterns = [
    path("", mtls_views.mtls_page, name="project-mtls"),
    path("enable/", mtls_views.mtls_enable, name="mtls-enable"),
    path("rotate-ca/", mtls_views.mtls_rotate_ca, name="mtls-rotate-ca"),
]
peering_patterns = [
    path("", peering_views.project_peering, name="project-peering"),
    path("request/", peering_views.peering_request, name="peering-request"),
    path("<int:peering_id>/accept/", peering_views.peering_accept, name="peering-accept"),
    path("<int:peering_id>/cancel/", peering_views.peering_cancel, name="peering-cancel"),
    path("<int:peering_id>/revoke/", peering_views.peering_revoke, name="peering-revoke"),
]
project_patterns: list[URLPattern | URLResolver] = [
    path("", views.project_overview, name="project-overview"),
    path("network/", views.project_network, name="project-network"),
    path("service-choices/", views.service_choices, name="service-choices"),
    path("settings/", views.project_settings, name="project-settings"),
    path("delete/", views.project_delete, name="project-delete"),
    path("audit/", views.audit_log, name="audit-log"),
    path("audit/export.csv", views.audit_log_csv, name="audit-log-csv"),
    path("sync/", views.project_sync, name="project-sync"),
    path("live/", views.project_live, name="project-live"),
    path("sync/retry/", views.project_sync_retry, name="project-sync-retry"),
    path("services/", include(service_patterns)),
    path("secrets/", include(secret_patterns)),
    path("peering/", include(peering_patterns)),
    path("mtls/", include(mtls_patterns)),
]
team_patterns = [
    path("", team_views.org_team, name="org-team"),
    path("invite/", team_views.org_team_invite, name="org-team-invite"),
    path("<int:membership_id>/role/", team_views.org_team_role, name="org-team-role"),
    path("<int:membership_id>/remove/", team_views.org_team_remove, name="org-team-remove"),
]
token_patterns = [
    path("", token_views.org_tokens, name="org-tokens"),
    path("new/", token_views.org_token_create, name="org-token-create"),
    path("<int:token_id>/revoke/", token_views.org_token_revoke, name="org-token-revoke"),
]
# The header's notifications (each reader's own: networking.inbox decides what they see).
notification_patterns = [
    path("", notification_views.notification_list, name="notification-list"),
    path("open/", notification_views.notification_open, name="notification-open"),
    path("read/", notification_views.notifications_mark_read, name="notifications-mark-read"),
    path("live/", notification_views.notifications_live, name="notifications-live"),
]
support_patterns = [
    path("", peering_views.support_queue, name="support-queue"),
    path("<int:peering_id>/approve/", peering_views.support_approve, name="support-approve"),
    path("<int:peering_id>/reject/", peering_views.support_reject, name="support-reject"),
]

urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.home, name="home"),
    path("accounts/login/", SignInView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("projects/", views.project_list, name="project-list"),
    path("orgs/<slug:org_slug>/projects/new/", views.project_create, name="project-create"),
    path("orgs/<slug:org_slug>/team/", include(team_patterns)),
    path("orgs/<slug:org_slug>/tokens/", include(token_patterns)),
    path("projects/<project_id:project_uid>/", include(project_patterns)),
    path("support/peering/", include(support_patterns)),
    path("notifications/", include(notification_patterns)),
    # The HTTP API for scripts and the CLI (api/): tokens, problem+json, its own access matrix.
    path("api/v1/", api_urls()),
    re_path(r"^api/(?P<rest>.*)$", api_not_found),
]
