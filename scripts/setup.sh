#!/usr/bin/env bash
# Set up .venv with exoray and everything its tests need, on a fresh Linux machine.
# torch/torchvision come first from the registry (their CPU-capable builds), then the rest is
# installed under constraints so no dependency can swap them for another release.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS=${EXORAY_EXTRAS:-models,dev}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
if ! python -c "import torch, torchvision" >/dev/null 2>&1; then
  python -m pip install -q --isolated torch==2.13.0 torchvision==0.28.0
fi
python -m pip install -q -c scripts/constraints.txt -e ".[${EXTRAS}]"
python -c "import torch, torchvision, ray, exoray; print('exoray', exoray.__version__, 'torch', torch.__version__, 'ray', ray.__version__)"
