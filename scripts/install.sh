#!/usr/bin/env bash
# Install distill and its test extra into ./.venv with the CPU build of torch.
# Used by the README's first command and by CI (.ci/run): one install recipe.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade uv
# Local wheel directories (PIP_FIND_LINKS) hold the pinned CPU torch on machines that ship it.
links=()
for dir in ${PIP_FIND_LINKS:-/opt/wheels}; do [ -e "$dir" ] && links+=(--find-links "$dir"); done
# --compile-bytecode: write .pyc files once here. Without them (uv's default, or PYTHONDONTWRITEBYTECODE=1)
# every `distill` process recompiles transformers' sources: about 7 s of each start on a 2-core CPU.
uv pip install -q --compile-bytecode "${links[@]}" -c constraints-cpu.txt -e ".[test]"
# The editable install leaves distill's own modules outside site-packages: compile them too (0.1 s of every start).
python -m compileall -q distill scripts
python -c "import torch, distill; print('installed distill with torch', torch.__version__)"
