"""Console URLs (urls_ministry)."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
