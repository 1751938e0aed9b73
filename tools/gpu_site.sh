#!/usr/bin/env bash
# Gather the pure-Python packages the GPU check needs that the GPU machine's image lacks (mup, jsonargparse) into
# .gpu/site, which `benchmarks/gpu_check.sh` puts on PYTHONPATH there. Run here, from the repository root, after
# `make install-dev`; then run the check with `.gpu` carried along. Nothing is downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
site=.gpu/site
rm -rf "$site" && mkdir -p "$site"
packages=$(.venv/bin/python - <<'PY'
import importlib, os
for name in ("mup", "jsonargparse"):
    print(os.path.dirname(importlib.import_module(name).__file__))
PY
)
for dir in $packages; do cp -r "$dir" "$site/"; done
find "$site" -name __pycache__ -prune -exec rm -rf {} +
echo "gathered into $site: $(ls "$site" | tr '\n' ' ')"
