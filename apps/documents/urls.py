from django.urls import include, path

from . import views

app_name = "documents"

urlpatterns = [
    path("", views.workspace_list, name="index"),
    path("workspaces/<int:workspace_id>/", views.workspace_detail, name="workspace"),
    path("workspaces/<int:workspace_id>/upload", views.document_upload, name="upload"),
    path("workspaces/<int:workspace_id>/members", views.workspace_members, name="members"),
    path("workspaces/<int:workspace_id>/delete", views.workspace_delete, name="workspace_delete"),
    path("documents/<int:document_id>/status", views.document_status, name="status"),
    path("documents/<int:document_id>/download", views.document_download, name="download"),
    path("documents/<int:document_id>/delete", views.document_delete, name="delete"),
    path("", include("apps.documents.answer_urls")),  # issue 7: answers with citations
]
