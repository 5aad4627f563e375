"""ASGI entry point (uvicorn).

``/v1`` requests that carry an API key are served by the lean application of
:mod:`apps.gateway.asgi` in front of Django's handler (no middleware stack on
the hot path); everything else, browser sessions on ``/v1`` included, goes to
Django, behind a request-body limit (:mod:`gennai.body_limit`) so that Django
never spools an unbounded body to disk.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gennai.settings.prod")

django_application = get_asgi_application()

from apps.gateway.asgi import V1Application  # noqa: E402 - needs Django set up first
from gennai.body_limit import RequestBodyLimit  # noqa: E402

application = V1Application(RequestBodyLimit(django_application))
