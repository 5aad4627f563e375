"""Browser flow for AI apps: open 校正 from the catalogue, run it on a sample text, see the
highlighted 公用文 findings at once and the model's explanation stream in.

Served under uvicorn (ASGI) like the chat e2e, so the SSE arrives progressively; the model is
a :class:`FakeUpstream` sending a token every 0.15 s.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from apps.aiapps import kobun
from apps.tenancy.models import Ministry
from tests.support.asgi import AsgiServer
from tests.support.fake_upstream import FakeUpstream
from tests.support.idp import DevIdP
from tests.support.registry import Registered, Upstream, register_alias

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = Path(os.environ.get("GENNAI_SCREENSHOTS", ".gennai/test/screenshots"))
SAMPLE = "本件の取り扱いについて、参加者は十二人である。手続きを行なって下さい。"
TOKENS = 12


@pytest.fixture
def asgi_server(transactional_db: None) -> Iterator[str]:
    server = AsgiServer().start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def fake_model() -> Iterator[FakeUpstream]:
    with FakeUpstream(tokens=TOKENS, delay=0.15, word="修正理由") as upstream:
        yield upstream


@pytest.fixture
def site(dev_idp: DevIdP, asgi_server: str, fake_model: FakeUpstream) -> tuple[str, Registered]:
    call_command("seed_demo", verbosity=0)
    registered = register_alias(
        upstreams=[Upstream(fake_model.url, clearance=2)],
        ministries=[Ministry.objects.get(code="digital")],
        name="standard-chat",
        display_name_ja="標準チャット（テスト）",
        display_name_en="Standard chat (test)",
    )
    dev_idp.register_app(asgi_server)
    return asgi_server, registered


OUTPUT_STATE = """() => {
  const done = document.querySelector('[data-testid="run-result"]');
  if (done) return [done.dataset.status, -1];
  const out = document.querySelector('[data-testid="run-output"]');
  return ["streaming", out ? out.textContent.length : 0];
}"""


def test_staff_proofreads_and_sees_findings_and_streamed_explanation(
    page: Any, site: tuple[str, Registered]
) -> None:
    base, registered = site
    page.goto(f"{base}/")
    page.get_by_test_id("login").click()
    page.get_by_test_id("login-tanaka").click()
    page.wait_for_url(f"{base}/")
    page.get_by_test_id("nav-apps").click()
    page.wait_for_url(f"{base}/apps/")
    page.locator('[data-testid="app-card"]').filter(has_text="校正（公用文）").get_by_test_id(
        "app-link"
    ).click()
    page.get_by_test_id("field-text").fill(SAMPLE)
    page.get_by_test_id("model-select").select_option(registered.alias.name)
    page.get_by_test_id("run-submit").click()
    page.wait_for_url(f"{base}/apps/runs/*/")

    # The deterministic findings are on the page before the model has finished.
    expected = [f for f in kobun.check(SAMPLE) if f.suggestion is not None]
    marks = page.get_by_test_id("finding-mark")
    marks.first.wait_for()
    assert marks.all_inner_texts() == [SAMPLE[f.start : f.end] for f in expected]
    assert "取扱い" in page.get_by_test_id("kobun-corrected").inner_text()

    lengths: list[int] = []
    deadline = time.monotonic() + 20
    status = ""
    while time.monotonic() < deadline:
        status, length = page.evaluate(OUTPUT_STATE)
        if status != "streaming":
            break
        if length and (not lengths or length != lengths[-1]):
            lengths.append(length)
        time.sleep(0.03)
    assert status == "complete", status
    assert len(lengths) >= 3, f"expected the output to grow while streaming, saw {lengths}"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "aiapps-kobun.png"), full_page=True)
    output = page.get_by_test_id("run-output").inner_text()
    assert "修正理由11" in output and "<p>" not in output  # Markdown rendered, not shown as text
    # The findings stay after the final fragment replaced the streaming one, and survive a reload.
    page.reload()
    assert page.get_by_test_id("finding-mark").count() == len(expected)
    assert page.get_by_test_id("run-result").get_attribute("data-status") == "complete"
