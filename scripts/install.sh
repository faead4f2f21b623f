#!/usr/bin/env bash
# Set up napari-unet on a fresh Debian/Ubuntu machine: system libraries for Qt under Xvfb (when root
# or with sudo), a virtual environment in .venv, the CPU build of torch, and the project with its
# test extra. Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SYSTEM_PACKAGES="xvfb xauth libfontconfig1 libglib2.0-0 libdbus-1-3 libegl1 libgl1 \
libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 \
libxcb-render-util0 libxcb-shape0 libxcb-xinerama0"

if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
  if [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; then
    # shellcheck disable=SC2086
    if ! dpkg -s $SYSTEM_PACKAGES >/dev/null 2>&1; then
      $SUDO apt-get update -qq
      # shellcheck disable=SC2086
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        $SYSTEM_PACKAGES >/dev/null
    fi
  else
    echo "install.sh: not root and no sudo: skipping system packages ($SYSTEM_PACKAGES)" >&2
  fi
fi

PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# The CPU build of torch first: an unpinned torch would pull a multi-GB CUDA build.
# TORCH_SPEC overrides it (e.g. TORCH_SPEC="torch --index-url .../cu124" on a GPU machine).
.venv/bin/python -c "import torch" 2>/dev/null || \
  .venv/bin/python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
# This project is napari-cell-unet. A distribution called napari-unet in .venv (another plugin, or
# this project installed before it had a name of its own) ships the same import package, napari_unet.
if .venv/bin/python -m pip show -q napari-unet >/dev/null 2>&1; then
  echo "install.sh: removing napari-unet from .venv (it ships an import package napari_unet too)" >&2
  .venv/bin/python -m pip uninstall -y -q napari-unet
fi
.venv/bin/python -m pip install -q -e ".[testing]"
echo "install.sh: ready; activate with 'source .venv/bin/activate'"
