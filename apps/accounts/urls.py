from django.urls import path
from mozilla_django_oidc.views import OIDCAuthenticationRequestView

from . import views

app_name = "accounts"

urlpatterns = [
    path("login/", OIDCAuthenticationRequestView.as_view(), name="login"),
    path("callback/", views.CallbackView.as_view(), name="oidc_callback"),
    path("logout/", views.logout_view, name="logout"),
    path("backchannel-logout/", views.backchannel_logout_view, name="backchannel_logout"),
]
