"""Rebuilding the page text and character boxes from Tesseract's TSV output."""

from __future__ import annotations

from apps.documents.ocr import page_from_tsv

HEADER = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext"


def _word(block: int, line: int, left: int, top: int, width: int, text: str) -> str:
    return f"5\t1\t{block}\t1\t{line}\t1\t{left}\t{top}\t{width}\t40\t95\t{text}"


def test_text_and_boxes_follow_words_lines_and_blocks() -> None:
    tsv = "\n".join(
        [
            HEADER,
            "1\t1\t0\t0\t0\t0\t0\t0\t2480\t3508\t-1\t",  # page row: no text
            _word(1, 1, 100, 300, 200, "旅費"),
            _word(1, 1, 300, 300, 100, "は"),
            _word(1, 2, 100, 400, 150, "Article"),
            _word(1, 2, 300, 400, 50, "5"),
            _word(2, 1, 100, 600, 100, "以上"),
        ]
    )
    page = page_from_tsv(tsv, height_points=842.0, dpi=300)
    assert page.text == "旅費は\nArticle 5\n\n以上"
    assert len(page.boxes) == len(page.text)
    # Japanese words join without a space; inserted separators have no box.
    assert [box is None for box in page.boxes] == [ch in " \n" for ch in page.text]
    # "旅" is the left half of the 200 px word at x = 100 px: 24-48 pt; y from the bottom.
    left, bottom, right, top = page.boxes[0]  # type: ignore[misc]
    assert (left, right) == (24.0, 48.0)
    assert (top, bottom) == (842.0 - 72.0, 842.0 - 81.6)


def test_empty_or_malformed_output_gives_an_empty_page() -> None:
    assert page_from_tsv("", height_points=842.0).text == ""
    assert page_from_tsv(HEADER + "\n5\t1\t1\t1\t1\t1\tx\ty\tz\tw\t9\t字", height_points=842.0).boxes == []
