"""The insight pages in English: nothing Japanese left in what they render below the console nav."""

from __future__ import annotations

import re
from typing import Any

from django.urls import reverse

from .insight_support import add_usage, client_for, make_people

JAPANESE = re.compile(r"[\u3000-\u30ff\u3400-\u9fff\uff00-\uffef]")


def _below_nav(html: str) -> str:
    main = html[html.index('<main id="main"') : html.index("</main>")]
    return main[main.index('data-testid="console-nav"') :].split("</nav>", 1)[1]


def test_insight_pages_are_translated(ministries: tuple[Any, Any]) -> None:
    people = make_people(ministries)
    add_usage(people.a, model="m", prompt=1, completion=1)
    pages = [
        (people.admin_a, reverse("console:usage"), {}),
        (people.admin_a, reverse("console:usage"), {"group_by": "team"}),  # "(none)" label
        (people.admin_a, reverse("console:usage"), {"start": "2026-02-02", "end": "2026-01-01"}),  # errors
        (people.auditor_a, reverse("console:audit_list"), {"start": "2020-01-01", "end": "2020-01-02"}),
        (people.platform_auditor, reverse("console:audit_list"), {"ministry": ""}),
        (people.platform_admin, reverse("console:platform_ministries"), {}),
        (people.platform_admin, reverse("console:platform_usage"), {}),
        (people.platform_admin, reverse("console:platform_budget"), {}),
        (people.platform_auditor, reverse("console:platform_budget"), {}),
    ]
    for user, url, query in pages:
        client = client_for(user)
        client.cookies["django_language"] = "en"
        response = client.get(url, query, HTTP_ACCEPT_LANGUAGE="en")
        assert response.status_code == 200, url
        text = _below_nav(response.content.decode())
        # Event data is what people wrote (names of things); the page's own words must be English.
        text = re.sub(r'<td class="max-w-md[^>]*>.*?</td>', "", text, flags=re.S)
        assert not JAPANESE.findall(text), (url, query, sorted(set(JAPANESE.findall(text)))[:20])
