#!/usr/bin/env bash
# The GPU acceptance run as one command that needs neither make nor a network (docs/GPU_CHECK.md):
# with a bundle (.gpu-bundle, from `make gpu-bundle`), install it into a private venv and run from
# there; without one, run with the project's .venv (or python3). Extra arguments go to perf.gpu_check.
#   bash perf/gpu_check.sh [--cpu-only] ...        (make gpu-check runs this)
set -euo pipefail
cd "$(dirname "$0")/.."
bundle=${GPU_BUNDLE:-.gpu-bundle} venv=${GPU_VENV:-.gpu-venv} python=${GPU_PYTHON:-python3}
out=()
[ -n "${OUT:-}" ] && out=(--out "$OUT")
if [ -d "$bundle/wheels" ]; then
    perf/gpu_env.sh "$python" "$venv" "$bundle"
    PATH="$PWD/$venv/bin:$PATH" exec "$venv/bin/python" -m perf.gpu_check "${out[@]}" "$@"
fi
py=$python
[ -x .venv/bin/python ] && py=.venv/bin/python
echo "gpu-check: no bundle at $bundle: running with $py"
exec "$py" -m perf.gpu_check "${out[@]}" "$@"
