"""Model output is rendered as Markdown and sanitised: no markup from the model reaches the page."""

from __future__ import annotations

from apps.chat.markdown import render_markdown


def test_code_blocks_and_tables_are_kept() -> None:
    html = render_markdown("```python\nprint('<b>')\n```\n\n|a|b|\n|-|-|\n|1|2|\n\n- 一\n- 二")
    assert "<pre><code>print('&lt;b&gt;')" in html
    assert "<table>" in html and "<td>1</td>" in html
    assert "<ul>" in html and "<li>一</li>" in html


def test_raw_html_and_scripts_are_escaped() -> None:
    html = render_markdown('<script>alert(1)</script><img src=x onerror="alert(1)"> **太字**')
    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;" in html
    assert "<strong>太字</strong>" in html


def test_links_get_noopener_and_dangerous_schemes_are_dropped() -> None:
    html = render_markdown(
        "[ok](https://www.digital.go.jp/) [bad](javascript:alert(1)) [data](data:text/html,x)"
    )
    assert '<a href="https://www.digital.go.jp/" rel="noopener noreferrer">ok</a>' in html
    assert 'href="javascript' not in html and 'href="data' not in html


def test_images_are_not_rendered() -> None:
    assert "<img" not in render_markdown("![追跡](https://tracker.example/p.png)")


def test_headings_start_below_the_page_headings() -> None:
    html = render_markdown("# 見出し\n\n## 小見出し")
    assert "<h3>見出し</h3>" in html and "<h4>小見出し</h4>" in html
    assert "<h1" not in html and "<h2" not in html


def test_partial_markdown_renders() -> None:
    assert "<pre><code>unterminated" in render_markdown("```\nunterminated")
    assert render_markdown("") == ""
