"""``/console/``: the ministry-admin and platform-admin console.

Each area has its own URL module (one owner each); all names live in the
``console`` namespace.
"""

from django.urls import path

from . import urls_insight, urls_ministry, views

app_name = "console"

urlpatterns = [
    path("announcements/<int:announcement_id>/", views.announcement_detail, name="announcement_detail"),
    # Members, teams, model allowlist, budgets and limits, retention (ministry admins).
    *urls_ministry.urlpatterns,
    # Usage dashboard, audit browser and exports, platform-wide views.
    *urls_insight.urlpatterns,
]
