"""``/gateway/``: ministry-admin pages and the management API for API keys."""

from django.urls import path

from . import console_views
from .api import views as api_views

app_name = "gateway"

urlpatterns = [
    path("keys/", console_views.key_list, name="key_list"),
    path("keys/<int:key_id>/revoke/", console_views.key_revoke, name="key_revoke"),
    path("keys/<int:key_id>/workspaces/", console_views.key_workspaces, name="key_workspaces"),
    path("api/keys/", api_views.ApiKeyListCreate.as_view(), name="api_key_list"),
    path("api/keys/<int:key_id>/revoke/", api_views.ApiKeyRevoke.as_view(), name="api_key_revoke"),
]
