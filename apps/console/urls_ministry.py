"""Console URLs of the ministry admin pages (names in the ``console`` namespace).

Every view here is wrapped in :func:`apps.console.permissions.console_required`;
``apps/console/tests/test_url_walk.py`` walks every URL of the namespace as each
role of two ministries (declare per-URL expectations in ``tests/url_matrix.py``).
"""

from django.urls import URLPattern, path

from . import views_limits, views_members, views_ministry

urlpatterns: list[URLPattern] = [
    path("", views_ministry.home, name="home"),
    path("members/", views_ministry.member_list, name="member_list"),
    path("members/<int:user_id>/", views_ministry.member_detail, name="member_detail"),
    path("members/<int:user_id>/grants/", views_members.member_grant_create, name="member_grant_create"),
    path(
        "members/<int:user_id>/grants/<int:grant_id>/revoke/",
        views_members.member_grant_revoke,
        name="member_grant_revoke",
    ),
    path("teams/", views_ministry.team_list, name="team_list"),
    path("teams/new/", views_ministry.team_create, name="team_create"),
    path("teams/<int:team_id>/", views_ministry.team_detail, name="team_detail"),
    path("teams/<int:team_id>/rename/", views_ministry.team_rename, name="team_rename"),
    path("teams/<int:team_id>/delete/", views_ministry.team_delete, name="team_delete"),
    path("teams/<int:team_id>/members/add/", views_ministry.team_member_add, name="team_member_add"),
    path(
        "teams/<int:team_id>/members/<int:team_membership_id>/remove/",
        views_ministry.team_member_remove,
        name="team_member_remove",
    ),
    path("models/", views_ministry.model_list, name="model_list"),
    path("models/<int:alias_id>/allow/", views_ministry.model_allow, name="model_allow"),
    path("models/<int:alias_id>/disallow/", views_ministry.model_disallow, name="model_disallow"),
    path("limits/", views_limits.limit_list, name="limit_list"),
    path("limits/new/", views_limits.limit_create, name="limit_create"),
    path("limits/<int:limit_id>/edit/", views_limits.limit_edit, name="limit_edit"),
    path("limits/<int:limit_id>/delete/", views_limits.limit_delete_view, name="limit_delete"),
    path("retention/", views_ministry.retention, name="retention"),
]
