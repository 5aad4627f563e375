"""Console URLs of the insight pages: usage dashboard, audit browser, platform views.

Names in the ``console`` namespace. Usage pages: ministry admins (ministry
auditors read); audit pages: ministry admins and auditors (own ministry),
platform auditors and admins (every ministry, read-only, audited); platform
pages, incl. one ministry's local-grant policy: platform admins (platform
auditors read). Expectations per role are in ``apps/console/tests/url_matrix.py``.
"""

from django.urls import URLPattern, path

from . import views_audit, views_platform, views_usage

urlpatterns: list[URLPattern] = [
    path("usage/", views_usage.usage_dashboard, name="usage"),
    path("usage/export.csv", views_usage.usage_csv, name="usage_csv"),
    path("audit/", views_audit.audit_list, name="audit_list"),
    path("audit/export.jsonl", views_audit.audit_export, name="audit_export"),
    path("platform/ministries/", views_platform.ministry_list, name="platform_ministries"),
    path(
        "platform/ministries/<int:ministry_id>/local-grants/",
        views_platform.platform_local_grants,
        name="platform_local_grants",
    ),
    path("platform/usage/", views_platform.usage_overview, name="platform_usage"),
    path("platform/budget/", views_platform.platform_budget, name="platform_budget"),
]
