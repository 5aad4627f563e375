"""Console URLs (urls_insight)."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
