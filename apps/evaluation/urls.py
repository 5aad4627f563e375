"""URLs of apps.evaluation."""

from django.urls import URLPattern, path

from . import views, views_arena

app_name = "evaluation"

urlpatterns: list[URLPattern] = [
    path("", views.suite_list, name="suite_list"),
    path("suites/<int:suite_id>/", views.suite_detail, name="suite_detail"),
    path("suites/<int:suite_id>/import/", views.suite_import, name="suite_import"),
    path("suites/<int:suite_id>/runs/", views.run_create, name="run_create"),
    path("runs/<int:run_id>/", views.run_detail, name="run_detail"),
    path("runs/<int:run_id>/report.<str:fmt>", views.run_export, name="run_export"),
    path("runs/<int:run_id>/bench/", views.run_bench, name="run_bench"),
    path("runs/<int:run_id>/promote/", views.promotion_start, name="promotion_start"),
    # A ministry's own suites and runs (same views, the active ministry's tables).
    path("m/suites/<int:suite_id>/", views.suite_detail, {"owner": "ministry"}, name="m_suite_detail"),
    path("m/suites/<int:suite_id>/import/", views.suite_import, {"owner": "ministry"}, name="m_suite_import"),
    path("m/suites/<int:suite_id>/runs/", views.run_create, {"owner": "ministry"}, name="m_run_create"),
    path("m/runs/<int:run_id>/", views.run_detail, {"owner": "ministry"}, name="m_run_detail"),
    path(
        "m/runs/<int:run_id>/report.<str:fmt>", views.run_export, {"owner": "ministry"}, name="m_run_export"
    ),
    path("m/runs/<int:run_id>/bench/", views.run_bench, {"owner": "ministry"}, name="m_run_bench"),
    path(
        "m/runs/<int:run_id>/promote/", views.promotion_start, {"owner": "ministry"}, name="m_promotion_start"
    ),
    path("promotions/", views.promotion_list, name="promotion_list"),
    path("promotions/<int:promotion_id>/full/", views.promotion_full, name="promotion_full"),
    path("promotions/<int:promotion_id>/rollback/", views.promotion_rollback, name="promotion_rollback"),
    path("arena/", views_arena.arena, name="arena"),
    path("arena/ask/", views_arena.arena_ask, name="arena_ask"),
    path("arena/<int:battle_id>/", views_arena.battle, name="arena_battle"),
]
