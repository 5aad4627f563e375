"""URLs of apps.aiapps (mounted at /apps/)."""

from django.urls import path

from . import views, views_builder

app_name = "aiapps"

urlpatterns = [
    path("", views.catalogue, name="catalogue"),
    path("alias-options", views.alias_options, name="alias_options"),
    path("runs/", views.run_list, name="run_list"),
    path("runs/<int:run_id>/", views.run_detail, name="run"),
    path("runs/<int:run_id>/stream", views.run_stream, name="run_stream"),
    path("runs/<int:run_id>/stop", views.run_stop, name="run_stop"),
    path("builder/new", views_builder.app_new, name="app_new"),
    path("builder/preview", views_builder.preview, name="preview"),
    path("builder/field-row", views_builder.field_row, name="field_row"),
    path("builder/field-row/remove", views_builder.field_row_remove, name="field_row_remove"),
    path("builder/import", views_builder.app_import, name="app_import"),
    path("builder/<int:app_id>/", views_builder.app_edit, name="app_edit"),
    path("builder/<int:app_id>/visibility", views_builder.app_visibility, name="app_visibility"),
    path("builder/<int:app_id>/propose", views_builder.app_propose, name="app_propose"),
    path("builder/<int:app_id>/delete", views_builder.app_delete, name="app_delete"),
    path("catalogue/proposals", views_builder.proposals, name="proposals"),
    path("<str:ref>/", views.app_run, name="app"),
    path("<str:ref>/favourite", views.favourite, name="favourite"),
    path("<str:ref>/export.json", views_builder.app_export, name="app_export"),
]
