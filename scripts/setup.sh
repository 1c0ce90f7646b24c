#!/usr/bin/env bash
# Create .venv (once) and install the pinned requirements into it. Idempotent: re-running only installs
# what changed. Usage: scripts/setup.sh [requirements.txt|requirements-dev.txt]
# TAC_STUDIO_TORCH=cpu installs the CPU-only build of torch and torchvision (~1 GB instead of ~6 GB with CUDA's
# libraries) from PyTorch's own index first; the other requirements then find them installed.
set -euo pipefail
cd "$(dirname "$0")/.."
requirements="${1:-requirements.txt}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "Creating the virtual environment .venv with $("$python" --version 2>&1) ..."
  "$python" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
stamp=".venv/.installed-$(basename "$requirements")"
if [ ! -f "$stamp" ] || [ -n "$(find . -maxdepth 1 -name 'requirements*.txt' -newer "$stamp")" ]; then
  echo "Installing $requirements into .venv: PyTorch, open_clip, Streamlit, UMAP, scikit-learn, pandas and their"
  echo "dependencies. The first time this downloads ~6.4 GB (torch with CUDA's libraries; ~1.5 GB with"
  echo "TAC_STUDIO_TORCH=cpu) and takes a few minutes; pip shows each package as it goes."
  if [ "${TAC_STUDIO_TORCH:-}" = "cpu" ]; then
    # shellcheck disable=SC2046 - the pinned torch and torchvision lines of requirements.txt, one word each
    .venv/bin/python -m pip install --progress-bar on --index-url https://download.pytorch.org/whl/cpu \
      $(grep -E '^(torch|torchvision)==' requirements.txt)
  fi
  .venv/bin/python -m pip install --progress-bar on -r "$requirements"
  touch "$stamp"
  echo "Installed. Later starts skip this step."
fi
