"""URLs of apps.aiapps."""

from django.urls import URLPattern

app_name = "aiapps"

urlpatterns: list[URLPattern] = []
