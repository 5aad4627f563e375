"""``/v1``: the OpenAI-compatible API (mounted at ``v1/`` in gennai/urls.py)."""

from django.urls import path

from . import views

app_name = "gateway_v1"

urlpatterns = [
    path("models", views.models, name="models"),
    path("models/<str:model>", views.models, name="model"),
    path("chat/completions", views.chat_completions, name="chat_completions"),
    path("embeddings", views.embeddings, name="embeddings"),
]
