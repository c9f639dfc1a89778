#!/usr/bin/env bash
# Make BUNDLE the model the app serves with no configuration: verify it, then copy it to
# demo/default_model/ (staged beside it, then renamed into place). At most 40 MB, to keep the repo small (an
# ImageNet-encoder U-Net with its two float16 serving graphs, LiteRT and ONNX, is about 38 MB).
# Usage: bash scripts/ship_default_model.sh runs/NAME/bundle
set -euo pipefail
cd "$(dirname "$0")/.."
bundle=${1:?usage: ship_default_model.sh BUNDLE_DIR}
.venv/bin/python -c "import sys; from demo.bundle_files import verify_bundle; verify_bundle(sys.argv[1])" "$bundle"
size_kb=$(du -sk "$bundle" | cut -f1)
[ "$size_kb" -le 40960 ] || { echo "error: $bundle is ${size_kb} KB; the shipped default must stay under 40 MB" >&2; exit 1; }
staging=$(mktemp -d demo/.default_model.tmp-XXXX)
chmod 755 "$staging"
cp -r "$bundle"/. "$staging"/
rm -rf demo/.default_model.old
[ -d demo/default_model ] && mv demo/default_model demo/.default_model.old
mv "$staging" demo/default_model
rm -rf demo/.default_model.old
echo "demo/default_model now holds $bundle (${size_kb} KB)"
