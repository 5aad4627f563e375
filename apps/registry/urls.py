from django.urls import path

from . import views

app_name = "registry"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("vendors/", views.vendor_list, name="vendor_list"),
    path("vendors/new/", views.vendor_create, name="vendor_create"),
    path("vendors/<int:vendor_id>/edit/", views.vendor_edit, name="vendor_edit"),
    path("models/", views.model_list, name="model_list"),
    path("models/new/", views.model_create, name="model_create"),
    path("models/<int:model_id>/edit/", views.model_edit, name="model_edit"),
    path("deployments/", views.deployment_list, name="deployment_list"),
    path("deployments/new/", views.deployment_create, name="deployment_create"),
    path("deployments/<int:deployment_id>/edit/", views.deployment_edit, name="deployment_edit"),
    path("deployments/<int:deployment_id>/check/", views.deployment_check, name="deployment_check"),
    path("aliases/", views.alias_list, name="alias_list"),
    path("aliases/new/", views.alias_create, name="alias_create"),
    path("aliases/<int:alias_id>/", views.alias_detail, name="alias_detail"),
    path("aliases/<int:alias_id>/routes/", views.alias_routes, name="alias_routes"),
    path("aliases/<int:alias_id>/rollback/", views.alias_rollback, name="alias_rollback"),
    path("aliases/<int:alias_id>/grants/", views.alias_grants, name="alias_grants"),
    path("changes/", views.change_list, name="change_list"),
    path("changes/<int:change_request_id>/approve/", views.change_approve, name="change_approve"),
    path("changes/<int:change_request_id>/reject/", views.change_reject, name="change_reject"),
]
