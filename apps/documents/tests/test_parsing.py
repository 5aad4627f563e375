"""Detection from content, parsers on generated Japanese files, normalisation and chunk positions."""

from __future__ import annotations

import io
import itertools
import zipfile

import pytest
from django.test import override_settings

from apps.documents.chunking import assemble, chunk_text, raw_indices_by_page
from apps.documents.detect import FileType, Rejection, detect_type, zip_directory_entries
from apps.documents.normalize import normalize
from apps.documents.parsers import ParseError, parse, pdf_chunk_boxes

from . import samples

pytestmark = pytest.mark.skipif(not samples.NOTO_CJK.exists(), reason="fonts-noto-cjk not installed")


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (samples.pdf_bytes, FileType.PDF),
        (samples.docx_bytes, FileType.DOCX),
        (samples.xlsx_bytes, FileType.XLSX),
        (samples.pptx_bytes, FileType.PPTX),
        (samples.html_bytes, FileType.HTML),
        (samples.csv_bytes, FileType.CSV),
        (lambda: "# 見出し\n本文です。".encode(), FileType.MARKDOWN),
        (lambda: "ただの文章です。\n二行目。".encode("euc_jp"), FileType.TEXT),
    ],
)
def test_type_comes_from_content(make, expected) -> None:  # type: ignore[no-untyped-def]
    # The name lies on purpose: detection never looks at it.
    assert detect_type(make(), filename="report.exe") == expected


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, "unsupported"),
        (b"\x00\x01\x02binary", "unsupported"),
        (b"PK\x03\x04garbage that is not a zip", "corrupt"),
    ],
)
def test_refusals_have_reasons_in_both_languages(data: bytes, code: str) -> None:
    with pytest.raises(Rejection) as refused:
        detect_type(data)
    assert refused.value.code == code and refused.value.ja and refused.value.en


def test_zip_bomb_is_refused_before_parsing() -> None:
    with pytest.raises(Rejection) as refused:
        detect_type(samples.zip_bomb_docx())
    assert refused.value.code == "zip_bomb"


def test_corrupt_and_encrypted_pdfs_have_clear_reasons() -> None:
    with pytest.raises(ParseError) as corrupt:
        parse(FileType.PDF, b"%PDF-1.7\n" + b"garbage" * 100)
    assert corrupt.value.code == "corrupt" and "壊れて" in corrupt.value.ja
    with pytest.raises(ParseError) as encrypted:
        parse(FileType.PDF, samples.pdf_bytes(password="himitsu"))
    assert encrypted.value.code == "encrypted" and "パスワード" in encrypted.value.ja


def test_pdf_pages_offsets_and_boxes() -> None:
    data = samples.pdf_bytes()
    parsed = parse(FileType.PDF, data)
    assembled = assemble(parsed)
    assert parsed.page_count == 3 and len(assembled.page_offsets) == 3
    chunks = chunk_text(assembled)
    # One chunk per section (headings start chunks), each on its own page.
    assert [c.page_start for c in chunks] == [1, 2, 3]
    assert [c.heading for c in chunks] == [h for h, _ in samples.SECTIONS]
    for chunk, (_heading, body) in zip(chunks, samples.SECTIONS, strict=True):
        assert assembled.text[chunk.char_start : chunk.char_end] == chunk.text
        assert body[:10] in chunk.text.replace("\n", "")
    boxes = pdf_chunk_boxes(data, [raw_indices_by_page(assembled, c.char_start, c.char_end) for c in chunks])
    assert set(boxes[1]) == {"2"}
    # Boxes lie on the A4 page (595 x 842 pt), top area, with positive size.
    for x0, y0, x1, y1 in boxes[1]["2"]:
        assert 0 <= x0 < x1 <= 595 and 0 <= y0 < y1 <= 842 and y0 > 600


def test_scanned_pdf_page_is_detected() -> None:
    parsed = parse(FileType.PDF, samples.scanned_pdf_bytes())
    assert [p.scanned for p in parsed.pages] == [True]
    assert assemble(parsed).text == ""


def test_docx_headings_and_table() -> None:
    assembled = assemble(parse(FileType.DOCX, samples.docx_bytes()))
    assert "宿泊料 | 12000円" in assembled.text
    chunks = chunk_text(assembled)
    assert [c.heading for c in chunks][:3] == [h for h, _ in samples.SECTIONS]
    assert all(c.page_start == 0 for c in chunks)


def test_xlsx_sheets_are_pages() -> None:
    parsed = parse(FileType.XLSX, samples.xlsx_bytes())
    assembled = assemble(parsed)
    assert parsed.page_count == 2
    assert "宿泊料 | 12000" in assembled.text and "担当 | 総務課" in assembled.text
    chunks = chunk_text(assembled)
    assert [(c.page_start, c.heading) for c in chunks] == [(1, "旅費基準"), (2, "連絡先")]


def test_pptx_slides_are_pages() -> None:
    chunks = chunk_text(assemble(parse(FileType.PPTX, samples.pptx_bytes())))
    assert [(c.page_start, c.heading) for c in chunks] == [
        (i + 1, h) for i, (h, _) in enumerate(samples.SECTIONS)
    ]


def test_html_drops_scripts_and_styles() -> None:
    text = assemble(parse(FileType.HTML, samples.html_bytes())).text
    assert "秘密" not in text and "color" not in text
    assert "宿泊料の上限は一泊一万二千円" in text and "宿泊料 | 12000円" in text


def test_csv_in_shift_jis() -> None:
    text = assemble(parse(FileType.CSV, samples.csv_bytes("cp932"))).text
    assert text == "区分 | 上限額\n宿泊料 | 12000円\n日当 | 2200円"


def test_normalisation_nfkc_and_whitespace() -> None:
    assert normalize("ＡＢＣ　１２３  ｶﾞｲﾄﾞ\r\n\r\n\r\n  次の行 ") == "ABC 123 ガイド\n\n次の行"


def test_chunks_are_deterministic_with_overlap_and_exact_offsets() -> None:
    sentences = "".join(f"これは第{i}番目の文であり、規程の内容を説明する。" for i in range(120))
    assembled = assemble(parse(FileType.TEXT, sentences.encode()))
    first = chunk_text(assembled)
    assert first == chunk_text(assembled)
    assert len(first) > 3
    for previous, chunk in itertools.pairwise(first):
        assert assembled.text[chunk.char_start : chunk.char_end] == chunk.text
        assert chunk.char_start < previous.char_end  # overlap
        assert chunk.text.startswith("これは") and previous.text.endswith("。")  # sentence boundaries
        assert chunk.token_count <= 400


def _zip_of(entries: int, *, force_zip64: bool = False) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("word/document.xml", "<w:document/>")
        for i in range(entries - 1):
            archive.writestr(f"p/{i}", b"")
        if force_zip64:
            archive.comment = b""
    data = buffer.getvalue()
    if force_zip64:
        # Rewrite the classic end record's counts as 0xFFFF, the way a zip64 archive declares them,
        # and put a zip64 end record and locator before it: what a writer of >65,535 entries makes.
        eocd = data.rfind(b"PK\x05\x06")
        directory_size = int.from_bytes(data[eocd + 12 : eocd + 16], "little")
        directory_at = int.from_bytes(data[eocd + 16 : eocd + 20], "little")
        record_at = eocd
        record = (
            b"PK\x06\x06"
            + (44).to_bytes(8, "little")
            + (45).to_bytes(2, "little")
            + (45).to_bytes(2, "little")
            + (0).to_bytes(4, "little")
            + (0).to_bytes(4, "little")
            + entries.to_bytes(8, "little")
            + entries.to_bytes(8, "little")
            + directory_size.to_bytes(8, "little")
            + directory_at.to_bytes(8, "little")
        )
        locator = (
            b"PK\x06\x07"
            + (0).to_bytes(4, "little")
            + record_at.to_bytes(8, "little")
            + (1).to_bytes(4, "little")
        )
        classic = data[eocd : eocd + 8] + b"\xff\xff\xff\xff" + data[eocd + 12 :]
        data = data[:eocd] + record + locator + classic
    return data


def test_zip_directory_entries_counts_classic_and_zip64_directories_and_stops_early() -> None:
    assert zip_directory_entries(_zip_of(7), stop_after=100) == 7
    assert zip_directory_entries(_zip_of(7, force_zip64=True), stop_after=100) == 7
    assert zip_directory_entries(_zip_of(70), stop_after=10) == 11  # stopped past the limit
    assert zip_directory_entries(b"PK\x03\x04 not a zip", stop_after=10) is None


def _declaring_one(data: bytes) -> bytes:
    """The same zip whose end record declares a single entry (zipfile reads them all anyway)."""
    eocd = data.rfind(b"PK\x05\x06")
    one = (1).to_bytes(2, "little")
    return data[: eocd + 8] + one + one + data[eocd + 12 :]


@override_settings(GENNAI_DOCUMENT_MAX_ZIP_ENTRIES=50)
def test_a_zip_of_too_many_parts_is_refused_before_its_directory_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """zipfile is never asked to parse the directory: a 300,000-entry zip cost 400 MB doing so."""
    monkeypatch.setattr(zipfile.ZipFile, "infolist", lambda self: pytest.fail("directory parsed"))
    for data in (_zip_of(51), _zip_of(51, force_zip64=True), _declaring_one(_zip_of(51))):
        with pytest.raises(Rejection) as refused:
            detect_type(data)
        assert refused.value.code == "zip_bomb" and "50" in refused.value.en and "50" in refused.value.ja


@override_settings(GENNAI_DOCUMENT_MAX_ZIP_ENTRIES=50)
def test_a_zip_at_the_entry_limit_is_judged_as_before() -> None:
    assert detect_type(_zip_of(50)) == FileType.DOCX
