#!/usr/bin/env bash
# Set up a fresh machine for omni-encoders: the system tools used to make real speech and video data (espeak-ng,
# flite, ffmpeg), then a virtual environment in .venv with the CPU build of PyTorch and this package with its test
# extras, pinned to the versions CI uses. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
missing=()
for tool in espeak-ng flite ffmpeg; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
# A C/C++ compiler and the Python headers: pyworld has no binary wheel, and the two CPU kernels compile on first use.
command -v g++ >/dev/null 2>&1 || missing+=(build-essential)
"$PYTHON" -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(sysconfig.get_paths()["include"] + "/Python.h"))' \
  || missing+=(python3-dev)
# Debian's python3 has the venv module without ensurepip, which python3-venv adds.
[ -x .venv/bin/python ] || "$PYTHON" -c 'import ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "[setup] installing system packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first: any other spec would pull a multi-GB CUDA build on the CI machines (whose pip finds the CPU build of
# 2.13.0 locally). Elsewhere set TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu to get the CPU build from PyTorch.
.venv/bin/python -m pip install -q "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
.venv/bin/python -m pip install -q -c scripts/constraints.txt -e ".[test]"
echo "[setup] ready: $(.venv/bin/python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)')"
