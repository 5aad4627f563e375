from django.urls import path

from . import arena_views, views

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
    path("<int:conversation_id>/arena", arena_views.arena_turn_create, name="arena_create"),
    path("arena/<int:battle_id>/vote", arena_views.arena_turn_vote, name="arena_vote"),
    path("arena/<int:battle_id>/<str:side>", arena_views.arena_side, name="arena_side"),
    path("arena/<int:battle_id>/<str:side>/stream", arena_views.arena_side_stream, name="arena_stream"),
    path("notices/<int:notification_id>/dismiss", views.notice_dismiss, name="notice_dismiss"),
]
