#!/usr/bin/env bash
# Make a private environment for `make gpu-check` on a GPU machine without a package registry:
# a venv that sees the image's CUDA torch (never installs one), with the bundle's wheels installed
# without a network, and tmux from the bundle's Debian packages unpacked under the venv (not in /).
#   perf/gpu_env.sh PYTHON VENV BUNDLE      (e.g. python3 .gpu-venv .gpu-bundle)
# GPU_ENV_BUNDLED_TMUX=1 uses the bundle's tmux even where one is installed. One line per step; the venv's bin/ then holds python, corral,
# torchrun and (when the machine has none) tmux.
set -euo pipefail
python=$1 venv=$2 bundle=$3
repo=$(pwd -P)
[ -d "$bundle/wheels" ] || { echo "gpu-env: no bundle at $bundle: run 'make gpu-bundle' on a machine with registry access and carry it" >&2; exit 2; }
have=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
want=$(sed -n 's/^python //p' "$bundle/TARGET" 2>/dev/null || true)
if [ -n "$want" ] && [ "$want" != "$have" ]; then
    echo "gpu-env: the bundle at $bundle is for Python $want but $python is $have: rebuild it with GPU_PY_VERSION=$have make gpu-bundle" >&2
    exit 2
fi
# Where the image keeps torch: a venv of our own made from a venv's python sees only the base
# interpreter's packages, so the torch's site-packages is added by a .pth file.
torch_site=$("$python" -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))')
rm -rf "$venv"
"$python" -m venv --without-pip --system-site-packages "$venv"
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
"$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
    --target "$site" "$bundle"/wheels/*.whl
# After the venv's own packages (the bundle's win): the repo, then the image's packages, added as a
# site dir so that the .pth files there are read too.
printf '%s\nimport site; site.addsitedir(%s)\n' "$repo" "'$torch_site'" > "$site/corral-gpu-check.pth"
echo "gpu-env: $venv: $(ls "$bundle"/wheels | wc -l) wheels from $bundle, torch from $torch_site"
# py-spy's binary lands in the target's bin/: the watchdog looks for it in the venv's bin/.
if [ -x "$site/bin/py-spy" ]; then ln -sf "$site/bin/py-spy" "$venv/bin/py-spy"; fi
# Console scripts run with the venv's python, so torchrun's workers see the bundle too.
for tool in "corral launcher.cli:main" "torchrun torch.distributed.run:main"; do
    set -- $tool
    printf '#!%s\nimport sys\nfrom %s import %s as main\nsys.exit(main())\n' \
        "$repo/$venv/bin/python" "${2%%:*}" "${2##*:}" > "$venv/bin/$1"
    chmod +x "$venv/bin/$1"
done
if [ -z "${GPU_ENV_BUNDLED_TMUX:-}" ] && command -v tmux >/dev/null && tmux -V >/dev/null 2>&1; then
    echo "gpu-env: tmux: $(command -v tmux) ($(tmux -V))"
else
    root="$repo/$venv/debroot"
    for deb in "$bundle"/debs/*.deb; do dpkg -x "$deb" "$root"; done
    libs="$root/usr/lib/x86_64-linux-gnu:$root/lib/x86_64-linux-gnu"
    printf '#!/bin/sh\nLD_LIBRARY_PATH=%s${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} exec %s "$@"\n' "$libs" "$root/usr/bin/tmux" > "$venv/bin/tmux"
    chmod +x "$venv/bin/tmux"
    # Debian 12's builds need glibc >= 2.36 (Ubuntu 24.04 has 2.39); say so here rather than in the launch steps.
    if version=$("$venv/bin/tmux" -V 2>&1); then
        echo "gpu-env: tmux: from the bundle, $version"
    else
        echo "gpu-env: the bundle's tmux does not run on this machine (the launch steps will fail): $version" >&2
    fi
fi
