#!/usr/bin/env bash
# The seed project's extraction stack, for the files benchmark (idempotent).
set -euo pipefail
VENV="${1:-$HOME/.cache/confab/bench-venv}"
if "$VENV/bin/python" -c "import pdfplumber, docx, openpyxl" 2>/dev/null; then
  exit 0
fi
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check pdfplumber python-docx openpyxl
"$VENV/bin/python" -c "import pdfplumber, docx, openpyxl"
