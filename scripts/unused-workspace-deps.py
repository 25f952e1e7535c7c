#!/usr/bin/env python3
"""Fails when [workspace.dependencies] names a crate that no workspace member uses.

cargo-machete checks each crate's own dependencies against its source; it does not look
at the workspace table, where an unused entry only pins a version nobody builds.
Usage: unused-workspace-deps.py [workspace dir] (default: the current directory).
"""
import json
import subprocess
import sys
import tomllib
from pathlib import Path

root = Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
declared = tomllib.loads((root / "Cargo.toml").read_text())["workspace"].get("dependencies", {})
meta = json.loads(
    subprocess.run(
        ["cargo", "metadata", "--no-deps", "--format-version", "1", "--manifest-path", str(root / "Cargo.toml")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
)


def tables(manifest):
    """Every dependency table of a manifest, target-specific ones included."""
    for key in ("dependencies", "dev-dependencies", "build-dependencies"):
        yield manifest.get(key, {})
    for target in manifest.get("target", {}).values():
        for key in ("dependencies", "dev-dependencies", "build-dependencies"):
            yield target.get(key, {})


used = set()
for package in meta["packages"]:
    manifest = tomllib.loads(Path(package["manifest_path"]).read_text())
    for table in tables(manifest):
        for name, spec in table.items():
            if isinstance(spec, dict) and spec.get("workspace"):
                used.add(name)

unused = sorted(set(declared) - used)
if unused:
    print(f"{root / 'Cargo.toml'}: [workspace.dependencies] that no member uses: {', '.join(unused)}")
    sys.exit(1)
print(f"[workspace.dependencies]: all {len(declared)} used")
