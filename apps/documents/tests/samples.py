"""Japanese test documents, generated (no binary fixtures in the repository)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

NOTO_CJK = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")

SECTIONS = [
    ("第1章 総則", "この規程は、職員の出張に関し必要な事項を定める。出張の命令は所属長が行う。"),
    ("第2章 旅費", "旅費は実費を支給する。宿泊料の上限は一泊一万二千円とする。領収書を添付すること。"),
    ("第3章 報告", "出張者は帰庁後五日以内に報告書を提出しなければならない。報告書は電子決裁で回付する。"),
]


def pdf_bytes(pages: list[str] | None = None, *, password: str | None = None) -> bytes:
    """A text PDF with one section per page (Noto Sans CJK)."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_font("noto", fname=str(NOTO_CJK))
    pdf.set_font("noto", size=11)
    for text in pages or [f"{h}\n{b}" for h, b in SECTIONS]:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    if password:
        pdf.set_encryption(owner_password=password, user_password=password)
    return bytes(pdf.output())


def scanned_pdf_bytes() -> bytes:
    """A PDF whose only page is a picture (no text layer)."""
    from fpdf import FPDF
    from PIL import Image

    image = Image.new("RGB", (200, 100), "white")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    pdf = FPDF()
    pdf.add_page()
    pdf.image(io.BytesIO(buffer.getvalue()), x=10, y=10, w=100)
    return bytes(pdf.output())


def docx_bytes() -> bytes:
    import docx

    document = docx.Document()
    for heading, body in SECTIONS:
        document.add_heading(heading, level=1)
        document.add_paragraph(body)
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text = "区分"
    table.cell(0, 1).text = "上限額"
    table.cell(1, 0).text = "宿泊料"
    table.cell(1, 1).text = "12000円"
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def xlsx_bytes() -> bytes:
    import openpyxl

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "旅費基準"
    sheet.append(["区分", "上限額"])
    sheet.append(["宿泊料", 12000])
    sheet.append(["日当", 2200])
    second = workbook.create_sheet("連絡先")
    second.append(["担当", "総務課"])
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def pptx_bytes() -> bytes:
    import pptx

    presentation = pptx.Presentation()
    for heading, body in SECTIONS:
        slide = presentation.slides.add_slide(presentation.slide_layouts[1])
        slide.shapes.title.text = heading
        slide.placeholders[1].text = body
    buffer = io.BytesIO()
    presentation.save(buffer)
    return buffer.getvalue()


def html_bytes() -> bytes:
    body = "".join(f"<h2>{h}</h2><p>{b}</p>" for h, b in SECTIONS)
    return (
        "<!DOCTYPE html><html><head><title>出張規程</title><style>p{color:red}</style>"
        "<script>alert('秘密')</script></head><body>"
        f"{body}<table><tr><th>区分</th><th>上限額</th></tr><tr><td>宿泊料</td><td>12000円</td></tr></table>"
        "</body></html>"
    ).encode()


def csv_bytes(encoding: str = "cp932") -> bytes:
    return "区分,上限額\n宿泊料,12000円\n日当,2200円\n".encode(encoding)


def zip_bomb_docx() -> bytes:
    """A zip that claims to be a DOCX and expands a thousandfold (ratio limit: 100)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr(
            "word/document.xml", b"<w:document>" + b"\x20" * (20 * 1024 * 1024) + b"</w:document>"
        )
    return buffer.getvalue()


def scanned_japanese_pdf_bytes(lines: list[str]) -> bytes:
    """A PDF whose only page is a picture of Japanese text (for OCR)."""
    from fpdf import FPDF
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(NOTO_CJK), 48)
    image = Image.new("L", (1600, 120 + 90 * len(lines)), 255)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((60, 60 + 90 * i), line, font=font, fill=0)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    pdf = FPDF()
    pdf.add_page()
    pdf.image(io.BytesIO(buffer.getvalue()), x=10, y=10, w=190)
    return bytes(pdf.output())
