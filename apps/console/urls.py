from django.urls import path

from . import views

app_name = "console"

urlpatterns = [
    path("announcements/<int:announcement_id>/", views.announcement_detail, name="announcement_detail"),
]
