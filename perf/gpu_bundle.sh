#!/usr/bin/env bash
# Build the offline bundle that `make gpu-check` installs from on a GPU machine without a package
# registry: the wheels corral needs beyond what such a machine's image holds (for CPython
# $GPU_PY_VERSION on x86-64 manylinux), and tmux with its libraries as Debian packages (unpacked
# into a private prefix there, never into /). Run it on a machine that reaches the registries.
#   perf/gpu_bundle.sh [DIR]        (default .gpu-bundle; make gpu-bundle)
set -euo pipefail
dir=${1:-.gpu-bundle}
py=${GPU_PY_VERSION:-3.12}
python=${PYTHON:-python3}
# What the image lacks (pydantic and its parts, libtmux, docker, isal, py-spy for the hang
# watchdog's stack dumps), and typing-extensions because pydantic-core needs a recent one.
# Versions bounded as in pyproject.toml.
wheels=(pydantic pydantic-core annotated-types typing-inspection "typing-extensions>=4.14.1"
        "libtmux>=0.62,<0.63" "docker>=7" "isal>=1.6" "py-spy>=0.3.14")
debs=(tmux libevent-core-2.1-7 libutempter0 libtinfo6)

rm -rf "$dir.tmp" && mkdir -p "$dir.tmp/wheels" "$dir.tmp/debs"
# One resolution for the set with every dependency (so pydantic and pydantic-core agree, and
# docker's requests/urllib3 come along): the bundle installs on its own, whatever the image has.
"$python" -m pip download -q --only-binary=:all: --implementation cp --python-version "$py" \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$dir.tmp/wheels" "${wheels[@]}" 2>"$dir.tmp/pip.log" \
    || { cat "$dir.tmp/pip.log" >&2; exit 1; }
# The resolution must be complete: the same set installs from the bundle alone (dry run, no index).
"$python" -m pip install -q --dry-run --ignore-installed --no-index --find-links "$dir.tmp/wheels" --only-binary=:all: \
    --implementation cp --python-version "$py" --platform manylinux2014_x86_64 --target "$dir.tmp/dry-run" \
    "${wheels[@]}" 2>"$dir.tmp/pip.log" \
    || { cat "$dir.tmp/pip.log" >&2; echo "gpu-bundle: the wheels do not install on their own" >&2; exit 1; }
rm -f "$dir.tmp/pip.log"
(cd "$dir.tmp/debs" && apt-get download "${debs[@]}" >/dev/null)
printf '%s\n' "${wheels[@]}" > "$dir.tmp/wheels.txt"
printf 'python %s\n' "$py" > "$dir.tmp/TARGET"
rm -rf "$dir" && mv "$dir.tmp" "$dir"
ls -l "$dir/wheels" "$dir/debs" | sed 's/^/  /'
du -sh "$dir"
