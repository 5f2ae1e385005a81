"""The dashboard's URLs, plus an admin site with a changelist of services (benchmarks only)."""

from __future__ import annotations

from django.contrib import admin
from django.urls import URLPattern, URLResolver, path

from dashboard.urls import urlpatterns as dashboard_urlpatterns
from networking.models import Service

site = admin.AdminSite(name="bench-admin")


@admin.register(Service, site=site)
class ServiceAdmin(admin.ModelAdmin[Service]):
    """What a Django team would build first: the same rows, paginated, searchable, filterable."""

    list_display = ("display_name", "name", "kind", "ports", "cluster_ip")
    list_filter = ("kind", "project")
    search_fields = ("name", "display_name")
    ordering = ("name",)
    list_per_page = 50


urlpatterns: list[URLPattern | URLResolver] = [
    path("bench-admin/", site.urls),
    *dashboard_urlpatterns,
]
