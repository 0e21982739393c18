#!/usr/bin/env bash
# Snapshot the latest ARNet/IUNet checkpoints, evaluate them, and export them with their metrics to weights/.
# Usage (repository root): training/release_snapshot.sh [extra eval_quality.py args, e.g. --stride 3 --sets bench]
# The run folders default to runs/arnet and runs/iunet; ARNET_RUN=... IUNET_RUN=... choose others.
# Then review weights/manifest.json and commit:
#   git add weights/arnet.safetensors weights/iunet.safetensors weights/manifest.json && git commit -m "..."
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=$(date -u +%Y%m%dT%H%M%SZ)
snap=runs/snapshots/$stamp
mkdir -p "$snap/arnet" "$snap/iunet"
cp "${ARNET_RUN:-runs/arnet}/latest.pt" "${ARNET_RUN:-runs/arnet}/log.csv" "$snap/arnet/"
cp "${IUNET_RUN:-runs/iunet}/latest.pt" "${IUNET_RUN:-runs/iunet}/log.csv" "$snap/iunet/"
.venv/bin/python training/export_weights.py --arnet-run "$snap/arnet" --iunet-run "$snap/iunet" --out "$snap/weights"
nice -n 10 .venv/bin/python bench/eval_quality.py --weights "$snap/weights" --json "$snap/quality.json" "$@" | tee "$snap/quality.md"
.venv/bin/python training/export_weights.py --arnet-run "$snap/arnet" --iunet-run "$snap/iunet" --metrics "$snap/quality.json"
echo "snapshot $snap exported to weights/ with metrics; tables in $snap/quality.md"
