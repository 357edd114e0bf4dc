"""Real documents made in the tests: Office files, HTML, PDFs (with a text layer and scanned),
images of text, and the bad inputs a converter must survive."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
CJK_FONT = "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"


def docx() -> bytes:
    from docx import Document

    document = Document()
    document.add_heading("Quarterly Detector Report", level=1)
    document.add_heading("Calibration Results", level=2)
    document.add_paragraph("The calorimeter was calibrated with cosmic muons.")
    table = document.add_table(rows=3, cols=3)
    for row, values in zip(
        table.rows,
        [("Channel", "Gain", "Status"), ("ECAL-1", "1.02", "good"), ("HCAL-7", "0.97", "noisy")],
        strict=True,
    ):
        for cell, value in zip(row.cells, values, strict=True):
            cell.text = value
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def pptx() -> bytes:
    from pptx import Presentation

    deck = Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[1])
    slide.shapes.title.text = "Beamline Upgrade"
    slide.placeholders[1].text = "New quadrupole magnets\nFaster trigger"
    second = deck.slides.add_slide(deck.slide_layouts[1])
    second.shapes.title.text = "Schedule"
    second.placeholders[1].text = "Installation in March"
    out = io.BytesIO()
    deck.save(out)
    return out.getvalue()


def xlsx() -> bytes:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "Runs"
    for row in [("Run", "Events", "Energy"), (1201, 53000, "13.6 TeV"), (1202, 61000, "13.6 TeV")]:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


HTML = (
    b"<html><head><title>Shift Notes</title></head><body><h1>Shift Notes</h1>"
    b"<p>Beam was stable all night.</p><table><tr><th>Time</th><th>Event</th></tr>"
    b"<tr><td>02:00</td><td>Magnet quench</td></tr></table></body></html>"
)


def text_pdf(lines: list[str]) -> bytes:
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    out = io.BytesIO()
    pdf = canvas.Canvas(out, pagesize=A4)
    y = 800
    for line in lines:
        pdf.drawString(72, y, line)
        y -= 20
    pdf.showPage()
    pdf.save()
    return out.getvalue()


def text_image(lines: list[str], *, font: str = FONT, fmt: str = "PNG") -> bytes:
    """A screenshot-like image of text, large and clean enough for OCR."""
    from PIL import Image, ImageDraw, ImageFont

    typeface = ImageFont.truetype(font, 40)
    image = Image.new("RGB", (1400, 120 + 70 * len(lines)), "white")
    draw = ImageDraw.Draw(image)
    for index, line in enumerate(lines):
        draw.text((60, 60 + 70 * index), line, fill="black", font=typeface)
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def scanned_pdf(lines: list[str]) -> bytes:
    """A PDF whose only page is a picture of text: no text layer at all."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    picture = ImageReader(io.BytesIO(text_image(lines)))
    out = io.BytesIO()
    pdf = canvas.Canvas(out, pagesize=A4)
    pdf.drawImage(picture, 30, 500, width=535, height=535 * (120 + 70 * len(lines)) / 1400)
    pdf.showPage()
    pdf.save()
    return out.getvalue()


def figure_pdf() -> bytes:
    """A page with a heading, a paragraph, a drawn figure and its caption."""
    from PIL import Image, ImageDraw
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    figure = Image.new("RGB", (400, 300), "white")
    draw = ImageDraw.Draw(figure)
    draw.ellipse((50, 50, 350, 250), fill="blue")
    draw.line((0, 0, 400, 300), fill="red", width=5)
    drawn = io.BytesIO()
    figure.save(drawn, "PNG")
    out = io.BytesIO()
    page = canvas.Canvas(out, pagesize=A4)
    page.setFont("Helvetica-Bold", 18)
    page.drawString(72, 780, "Detector Layout")
    page.setFont("Helvetica", 11)
    page.drawString(72, 750, "The figure below shows the beam pipe and the calorimeter.")
    page.drawImage(ImageReader(io.BytesIO(drawn.getvalue())), 72, 400, width=400, height=300)
    page.drawString(72, 380, "Figure 1: the detector cross-section.")
    page.showPage()
    page.save()
    return out.getvalue()


def encrypted_pdf() -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    writer.append(PdfReader(io.BytesIO(text_pdf(["secret minutes"]))))
    writer.encrypt(user_password="hunter2", owner_password="owner", algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def zip_bomb_docx(path: Path, unpacked: int = 300 * 1024 * 1024) -> bytes:
    """A real DOCX with one extra member of zeros that unpacks to ``unpacked`` bytes."""
    path.write_bytes(docx())
    with (
        zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as archive,
        archive.open("word/media/padding.bin", "w", force_zip64=True) as member,
    ):
        block = bytes(1024 * 1024)
        for _ in range(unpacked // len(block)):
            member.write(block)
    return path.read_bytes()


def _styles() -> tuple[Any, Any, Any]:
    from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    pdfmetrics.registerFont(TTFont("DejaVu", FONT))
    pdfmetrics.registerFont(TTFont("DejaVu-Bold", FONT.replace("Sans.ttf", "Sans-Bold.ttf")))
    sheet = getSampleStyleSheet()
    body = ParagraphStyle("body", parent=sheet["BodyText"], fontName="DejaVu", fontSize=10)
    h1 = ParagraphStyle("h1", parent=sheet["Heading1"], fontName="DejaVu-Bold", fontSize=20)
    h2 = ParagraphStyle("h2", parent=sheet["Heading2"], fontName="DejaVu-Bold", fontSize=14)
    return body, h1, h2


def two_column_pdf() -> bytes:
    """A paper-like page: a title across, then a left column that must be read before the
    right one, though their lines sit side by side."""
    from reportlab.lib.pagesizes import A4
    from reportlab.platypus import BaseDocTemplate, Frame, FrameBreak, PageTemplate, Paragraph

    body, h1, h2 = _styles()
    width, height = A4
    margin, gap, title = 50, 20, 60
    column = (width - 2 * margin - gap) / 2
    frames = [
        Frame(margin, height - margin - title, width - 2 * margin, title, id="title"),
        Frame(margin, margin, column, height - 2 * margin - title, id="left"),
        Frame(margin + column + gap, margin, column, height - 2 * margin - title, id="right"),
    ]
    out = io.BytesIO()
    doc = BaseDocTemplate(out, pagesize=A4, pageTemplates=[PageTemplate("paper", frames)])
    story: list[Any] = [Paragraph("Muon Lifetime Measurement", h1), FrameBreak()]
    story.append(Paragraph("Method Section", h2))
    story += [
        Paragraph(f"LEFTPARA{i} the apparatus records muon decays. " * 6, body) for i in (1, 2, 3)
    ]
    story.append(FrameBreak())
    story.append(Paragraph("Results Section", h2))
    story += [Paragraph(f"RIGHTPARA{i} the fitted lifetime agrees. " * 6, body) for i in (1, 2, 3)]
    doc.build(story)
    return out.getvalue()


def table_formula_pdf() -> bytes:
    """A ruled table and a display formula of symbols."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    body, h1, _ = _styles()
    rows = [
        ["Detector", "Channels", "Rate"],
        ["Pixel", "1200", "40 MHz"],
        ["Strip", "9600", "20 MHz"],
        ["Calorimeter", "4800", "10 MHz"],
        ["Muon", "2400", "5 MHz"],
    ]
    table = Table(rows, colWidths=[120, 80, 80])
    table.setStyle(
        TableStyle(
            [
                ("GRID", (0, 0), (-1, -1), 0.8, colors.black),
                ("FONTNAME", (0, 0), (-1, -1), "DejaVu"),
            ]
        )
    )
    display = ParagraphStyle("display", parent=body, fontSize=14, leading=20, alignment=1)
    formula = "∑<sub>i=1</sub><super>n</super> \u03b1<sub>i</sub> x<sub>i</sub> = ∫ f(x) dx"
    out = io.BytesIO()
    SimpleDocTemplate(out, pagesize=A4).build(
        [
            Paragraph("Readout Summary", h1),
            Paragraph("The table lists the readout of each subdetector.", body),
            Spacer(1, 12),
            table,
            Spacer(1, 12),
            Paragraph("The energy follows E = mc<super>2</super> as expected.", body),
            Paragraph(formula, display),
        ]
    )
    return out.getvalue()
