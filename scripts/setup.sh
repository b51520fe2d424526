#!/usr/bin/env bash
# Set up napari-advseg in ./.venv: torch (an installed one is kept), the package with its napari,
# nnunet and testing extras, and, with --test, a virtual display (Xvfb) for the widget tests.
#
# Every pip call here goes through pip's own configuration (pip.conf, PIP_INDEX_URL,
# PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS, constraints): this script names no package index. To choose
# a torch build (CPU-only, or a given CUDA version), set pip's index to the one PyTorch's install
# selector names before running it, or set TORCH_SPEC (default: the tested release).
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
[[ "${1:-}" == "--test" ]] && want_test=1

python=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)

# torch: an installed one (your CUDA build, say) is kept. Otherwise the tested release, pinned: an
# unpinned torch would take whatever build the newest release is (several GB of CUDA libraries).
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  "${pip[@]}" "${TORCH_SPEC:-torch==2.13.0}"
fi

# The nnunet extra (nnU-Net results folders as models) must keep the torch chosen above.
torch_before=$(.venv/bin/python -c "import torch; print(torch.__version__)")
"${pip[@]}" -e ".[napari,nnunet,testing]"
torch_after=$(.venv/bin/python -c "import torch; print(torch.__version__)")
if [[ "$torch_before" != "$torch_after" ]]; then
  echo "setup: installing the extras replaced torch $torch_before by $torch_after" >&2
  exit 1
fi

if (( want_test )) && ! command -v xvfb-run >/dev/null 2>&1; then
  packages=(xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0)
  if [[ $(id -u) -eq 0 ]]; then sudo=(); else sudo=(sudo); fi
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${packages[@]}" >/dev/null
fi
echo "napari-advseg is set up in .venv (torch $(.venv/bin/python -c 'import torch; print(torch.__version__)'))"
