#!/usr/bin/env bash
# Build a wheel of exoray (with the pipelines package and package data) into dist/, for Colab:
# copy it to Google Drive under MyDrive/exokiratory/wheels/ and the notebooks' install cell
# installs the newest one from there. No package index entry is needed.
#
#   bash scripts/build_wheel.sh            # into dist/, with .venv/bin/python (else python3)
#   bash scripts/build_wheel.sh OUTDIR     # into OUTDIR instead (relative to the current dir)
#   PYTHON=python3.12 bash scripts/build_wheel.sh
#
# The wheel is pure Python (py3-none-any), so it installs on Colab whatever Python built it.
# It is built from a clean copy of the sources (pyproject.toml, README.md, exoray/, pipelines/),
# so nothing stale from an earlier build and no __pycache__ can end up in it.
set -euo pipefail
if [ $# -ge 1 ]; then
  OUTDIR=$(mkdir -p "$1" && cd "$1" && pwd)
fi
cd "$(dirname "$0")/.."
OUTDIR=${OUTDIR:-$PWD/dist}
if [ -n "${PYTHON:-}" ]; then
  PY=$PYTHON
elif [ -x .venv/bin/python ]; then
  PY=.venv/bin/python
else
  PY=python3
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/exoray-wheel.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir "$work/src" "$work/out"
cp -R pyproject.toml README.md exoray pipelines "$work/src/"
find "$work/src" \( -name __pycache__ -o -name '*.egg-info' \) -prune -exec rm -rf {} +
find "$work/src" -name '*.py[co]' -delete

# Offline when the interpreter already has setuptools >= 68 (the build backend); otherwise pip
# fetches it into an isolated build environment.
isolation=(--no-build-isolation)
if ! "$PY" - <<'EOF' >/dev/null 2>&1
import setuptools
raise SystemExit(int(setuptools.__version__.split(".")[0]) < 68)
EOF
then
  isolation=()
fi
"$PY" -m pip wheel -q --no-deps ${isolation[@]+"${isolation[@]}"} -w "$work/out" "$work/src"

wheel=$(ls "$work/out"/exoray-*.whl)
mkdir -p "$OUTDIR"
cp "$wheel" "$OUTDIR/"
built="$OUTDIR/$(basename "$wheel")"
echo "built $built"
echo "For Colab: copy it to Google Drive as MyDrive/exokiratory/wheels/$(basename "$wheel")"
echo "(the notebooks install the newest exoray-*.whl found there; delete or replace older ones)"
