"""The seed's extraction stack on the benchmark corpus: prints JSON {format: {secs, iters, text}}."""
import json
import sys
import time

import docx
import openpyxl
import pdfplumber


def pdf(path):
    with pdfplumber.open(path) as doc:
        return "\n".join((page.extract_text() or "") for page in doc.pages)


def word(path):
    doc = docx.Document(path)
    out = [p.text for p in doc.paragraphs]
    for table in doc.tables:
        for row in table.rows:
            out.append(" ".join(cell.text for cell in row.cells))
    return "\n".join(out)


def excel(path):
    wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    out = []
    for ws in wb.worksheets:
        for row in ws.iter_rows(values_only=True):
            out.append(" ".join("" if v is None else str(v) for v in row))
    return "\n".join(out)


def main():
    corpus_dir, budget = sys.argv[1], float(sys.argv[2])
    result = {}
    for fmt, fn, name in [("pdf", pdf, "corpus.pdf"), ("docx", word, "corpus.docx"), ("xlsx", excel, "corpus.xlsx")]:
        path = f"{corpus_dir}/{name}"
        fn(path)  # warm-up
        start, n = time.perf_counter(), 0
        while True:
            text = fn(path)
            n += 1
            if time.perf_counter() - start > budget and n >= 2:
                break
        result[fmt] = {"secs": (time.perf_counter() - start) / n, "iters": n, "text": text}
    print(json.dumps(result))


main()
