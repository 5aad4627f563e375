"""Answers with citations and the passage viewer (included from :mod:`apps.documents.urls`)."""

from django.urls import path

from . import answer_views

urlpatterns = [
    path("workspaces/<int:workspace_id>/ask", answer_views.ask, name="ask"),
    path("answers/<int:answer_id>/", answer_views.answer_detail, name="answer"),
    path("answers/<int:answer_id>/stream", answer_views.answer_stream, name="answer_stream"),
    path("documents/<int:document_id>/passage/<int:chunk_id>/", answer_views.passage, name="passage"),
    path(
        "documents/<int:document_id>/passage/<int:chunk_id>/page/<int:page>.png",
        answer_views.passage_page,
        name="passage_page",
    ),
]
