from django.urls import include, path

from apps.tenancy import views as tenancy_views

urlpatterns = [
    path("", tenancy_views.home, name="home"),
    path("healthz", tenancy_views.healthz, name="healthz"),
    path("readyz", tenancy_views.readyz, name="readyz"),
    path("i18n/", include("django.conf.urls.i18n")),
    path("accounts/", include("apps.accounts.urls")),
    path("ministry/", include("apps.tenancy.urls")),
    path("console/", include("apps.console.urls")),
]
