from django.urls import path

from . import views

app_name = "chat"

urlpatterns = [
    path("", views.index, name="index"),
    path("models", views.alias_options, name="alias_options"),
    path("new", views.conversation_create, name="create"),
    path("<int:conversation_id>/", views.conversation_detail, name="conversation"),
    path("<int:conversation_id>/rename", views.conversation_rename, name="rename"),
    path("<int:conversation_id>/delete", views.conversation_delete, name="delete"),
    path("<int:conversation_id>/regenerate", views.message_regenerate, name="regenerate"),
    path("<int:conversation_id>/messages", views.message_create, name="message_create"),
    path("<int:conversation_id>/messages/<int:message_id>", views.message_detail, name="message"),
    path(
        "<int:conversation_id>/messages/<int:message_id>/stream", views.message_stream, name="message_stream"
    ),
    path("<int:conversation_id>/messages/<int:message_id>/stop", views.message_stop, name="message_stop"),
    path("notices/<int:notification_id>/dismiss", views.notice_dismiss, name="notice_dismiss"),
]
