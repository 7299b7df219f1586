#!/usr/bin/env bash
# Installs what eibacl needs; safe to run again. Sourced by run.sh and test.sh.
#  - the Debian package dataset-fashion-mnist (the default data), when apt is there;
#  - a virtual environment .venv (it sees packages already installed system-wide);
#  - eibacl itself with its dependencies, the dev tools, and the torch/torchvision pair
#    that works on these machines (pinned once, in pyproject.toml's extra "tested").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

FASHION=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
if [ ! -f "$FASHION" ] && command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
  if [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; then
    echo "setup: installing the Debian package dataset-fashion-mnist"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null \
      || echo "setup: apt could not install dataset-fashion-mnist; eibacl will try torchvision's download"
  else
    echo "setup: no root: run 'sudo apt-get install dataset-fashion-mnist' (or let torchvision download it)"
  fi
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv --system-site-packages .venv
fi
# shellcheck disable=SC1091
source .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
# pins and extras: pyproject.toml. Installed again only when it changed (pip's resolver
# alone takes minutes on a busy machine, and run.sh sources this file every time).
STAMP=.venv/.eibacl-installed
WANT="$(python --version) $(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  python -m pip install -q -e ".[dev,tested,fashion,sd]"
  echo "$WANT" > "$STAMP"
fi
