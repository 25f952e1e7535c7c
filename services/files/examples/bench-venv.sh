#!/usr/bin/env bash
# The reference extractors for the files benchmark (idempotent): the seed project's stack
# (pdfplumber, python-docx, openpyxl) and, for the real-world corpus, pypdfium2, xlrd,
# python-pptx and odfpy.
set -euo pipefail
VENV="${1:-$HOME/.cache/confab/bench-venv}"
check='import pdfplumber, docx, openpyxl, pypdfium2, xlrd, pptx, odf'
if "$VENV/bin/python" -c "$check" 2>/dev/null; then
  exit 0
fi
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check \
  pdfplumber==0.11.9 pypdfium2==5.15.2 python-docx==1.2.0 openpyxl==3.1.5 xlrd==2.0.2 \
  python-pptx==1.0.2 odfpy==1.4.1
"$VENV/bin/python" -c "$check"
