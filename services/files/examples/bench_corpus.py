"""Reference extractors over the real-world corpus: reads a list of files (one path a line
on stdin) and prints JSON {path: {lib: {"secs": s, "text": t} | {"error": e}}}.

Results are cached per file content and library version under the cache dir given as
argv[1], so a second run costs nothing; the timings in the cache are those of the run that
made them (same machine)."""
import hashlib
import json
import os
import signal
import sys
import time
from importlib.metadata import version


class Timeout(Exception):
    pass


def _alarm(*_):
    raise Timeout()


def pdfplumber_text(path):
    import pdfplumber

    with pdfplumber.open(path) as doc:
        return "\n".join((page.extract_text() or "") for page in doc.pages)


def pypdfium2_text(path):
    import pypdfium2

    doc = pypdfium2.PdfDocument(path)
    try:
        out = []
        for i in range(len(doc)):
            page = doc[i]
            out.append(page.get_textpage().get_text_range())
        return "\n".join(out)
    finally:
        doc.close()


def docx_text(path):
    import docx

    doc = docx.Document(path)
    out = [p.text for p in doc.paragraphs]
    for table in doc.tables:
        for row in table.rows:
            out.append(" ".join(cell.text for cell in row.cells))
    return "\n".join(out)


def xlsx_text(path):
    import openpyxl

    wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    out = []
    for ws in wb.worksheets:
        for row in ws.iter_rows(values_only=True):
            out.append(" ".join("" if v is None else str(v) for v in row))
    return "\n".join(out)


def xls_text(path):
    import xlrd

    wb = xlrd.open_workbook(path)
    out = []
    for sh in wb.sheets():
        for r in range(sh.nrows):
            cells = []
            for v in sh.row_values(r):
                if isinstance(v, float) and v.is_integer():
                    v = int(v)
                cells.append(str(v))
            out.append(" ".join(cells))
    return "\n".join(out)


def pptx_text(path):
    import pptx

    prs = pptx.Presentation(path)
    out = []
    for slide in prs.slides:
        for shape in slide.shapes:
            if shape.has_text_frame:
                for p in shape.text_frame.paragraphs:
                    out.append("".join(r.text for r in p.runs))
            if getattr(shape, "has_table", False) and shape.has_table:
                for row in shape.table.rows:
                    out.append(" ".join(c.text for c in row.cells))
        if slide.has_notes_slide:
            out.append(slide.notes_slide.notes_text_frame.text if slide.notes_slide.notes_text_frame else "")
    return "\n".join(out)


def ods_text(path):
    from odf import opendocument, table, teletype

    doc = opendocument.load(path)
    out = []
    for t in doc.spreadsheet.getElementsByType(table.Table):
        for row in t.getElementsByType(table.TableRow):
            out.append(" ".join(teletype.extractText(c) for c in row.getElementsByType(table.TableCell)))
    return "\n".join(out)


LIBS = {
    "pdf": [("pdfplumber", "pdfplumber", pdfplumber_text), ("pypdfium2", "pypdfium2", pypdfium2_text)],
    "docx": [("python-docx", "python-docx", docx_text)],
    "xlsx": [("openpyxl", "openpyxl", xlsx_text)],
    "xls": [("xlrd", "xlrd", xls_text)],
    "pptx": [("python-pptx", "python-pptx", pptx_text)],
    "ods": [("odfpy", "odfpy", ods_text)],
}


def main():
    cache = sys.argv[1]
    os.makedirs(cache, exist_ok=True)
    signal.signal(signal.SIGALRM, _alarm)
    result = {}
    for path in sys.stdin.read().split("\n"):
        if not path:
            continue
        fmt = path.rsplit(".", 1)[-1].lower()
        data = open(path, "rb").read()
        digest = hashlib.sha256(data).hexdigest()[:24]
        entry = {}
        for name, dist, fn in LIBS.get(fmt, []):
            key = os.path.join(cache, f"{digest}-{name}-{version(dist)}.json")
            if os.path.exists(key):
                with open(key) as f:
                    entry[name] = json.load(f)
                continue
            signal.alarm(30)
            start = time.perf_counter()
            try:
                text = fn(path)
                got = {"secs": time.perf_counter() - start, "text": text}
            except Timeout:
                got = {"error": "timed out after 30 s"}
            except Exception as e:  # the reference refuses the file
                got = {"error": f"{type(e).__name__}: {e}"[:300]}
            finally:
                signal.alarm(0)
            with open(key, "w") as f:
                json.dump(got, f)
            entry[name] = got
        result[path] = entry
    json.dump(result, sys.stdout)


main()
