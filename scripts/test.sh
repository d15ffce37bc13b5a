#!/usr/bin/env bash
# The README's test command: pytest over the whole suite, offline, warnings as errors.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 YOLO_OFFLINE=1 ORT_DISABLE_TELEMETRY=1 RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0
.venv/bin/python -m pytest -q "$@"
