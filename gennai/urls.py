from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from apps.tenancy import views as tenancy_views

urlpatterns = [
    path("", tenancy_views.home, name="home"),
    path("healthz", tenancy_views.healthz, name="healthz"),
    path("readyz", tenancy_views.readyz, name="readyz"),
    path("i18n/", include("django.conf.urls.i18n")),
    path("accounts/", include("apps.accounts.urls")),
    path("ministry/", include("apps.tenancy.urls")),
    path("console/", include("apps.console.urls")),
    path("registry/", include("apps.registry.urls")),
    path("v1/", include("apps.gateway.urls")),
    path("gateway/", include("apps.gateway.console_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("chat/", include("apps.chat.urls")),
    path("documents/", include("apps.documents.urls")),
    path("apps/", include("apps.aiapps.urls")),
    path("evaluation/", include("apps.evaluation.urls")),
]
