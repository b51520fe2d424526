#!/usr/bin/env bash
# Set up napari-advseg in ./.venv: torch (kept if already installed), the package with its
# napari and testing extras, and, with --test, a virtual display (Xvfb) for the widget tests.
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
[[ "${1:-}" == "--test" ]] && want_test=1

python=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)

# torch: an installed one (e.g. your CUDA build) is kept. Otherwise take a wheel that lies on
# this machine's disk, if any (never a download), then the CUDA build only where there is an
# NVIDIA GPU, else the CPU build from PyTorch's CPU index; never a multi-GB CUDA build on a CPU box.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if "${pip[@]}" --no-index --no-deps "torch>=2.1" 2>/dev/null; then
    version=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('torch'))")
    "${pip[@]}" "torch==${version}"  # its dependencies
  elif command -v nvidia-smi >/dev/null 2>&1; then
    "${pip[@]}" "torch>=2.1"
  else
    "${pip[@]}" "torch>=2.1" --index-url https://download.pytorch.org/whl/cpu \
      --extra-index-url https://pypi.org/simple
  fi
fi

"${pip[@]}" -e ".[napari,testing]"

if (( want_test )) && ! command -v xvfb-run >/dev/null 2>&1; then
  packages=(xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0)
  if [[ $(id -u) -eq 0 ]]; then sudo=(); else sudo=(sudo); fi
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${packages[@]}" >/dev/null
fi
echo "napari-advseg is set up in .venv (torch $(.venv/bin/python -c 'import torch; print(torch.__version__)'))"
