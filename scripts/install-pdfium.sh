#!/usr/bin/env bash
# Installs what document extraction needs, only when missing (idempotent):
#   - libpdfium.so (Chrome's PDF engine) from the pypdfium2 wheel on PyPI, without
#     installing the wheel, into $CONFAB_CACHE/pdfium (confab-extract binds it at run time);
#   - Tesseract with English data (Debian packages) for OCR of scans and images.
set -euo pipefail
cache="${CONFAB_CACHE:-$HOME/.cache/confab}"
version=5.15.2 # pdfium build 8149; pdfium-render's pdfium_latest API matches it
dest_dir="${CONFAB_PDFIUM_DIR:-$cache/pdfium}"
dest="$dest_dir/libpdfium.so"
mkdir -p "$dest_dir"
if [ ! -f "$dest" ] || [ "$(cat "$dest_dir/VERSION" 2>/dev/null)" != "$version" ]; then
  # Concurrent setups (tests, benches) wait for the first one's file.
  exec 9>"$dest_dir/.lock"
  flock 9
  if [ ! -f "$dest" ] || [ "$(cat "$dest_dir/VERSION" 2>/dev/null)" != "$version" ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    echo "[pdfium] downloading pypdfium2==$version from PyPI (4 MB)"
    python3 -m pip download -q --no-deps --only-binary :all: \
      --platform manylinux_2_17_x86_64 -d "$tmp" "pypdfium2==$version"
    python3 - "$tmp" "$dest" <<'PY'
import glob, shutil, sys, zipfile
whl = glob.glob(sys.argv[1] + "/*.whl")[0]
with zipfile.ZipFile(whl) as z, z.open("pypdfium2_raw/libpdfium.so") as src, open(sys.argv[2] + ".part", "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
    mv "$dest.part" "$dest"
    echo "$version" >"$dest_dir/VERSION"
    echo "[pdfium] $dest"
  fi
fi

if ! command -v tesseract >/dev/null || [ ! -f /usr/share/tesseract-ocr/5/tessdata/eng.traineddata ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "[ocr] apt-get install tesseract-ocr tesseract-ocr-eng"
    # Another apt run on the machine holds the lock for a while: wait for it.
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
      --no-install-recommends tesseract-ocr tesseract-ocr-eng >/dev/null
  else
    echo "[ocr] tesseract is missing: install tesseract-ocr and tesseract-ocr-eng (needs root)" >&2
  fi
fi
