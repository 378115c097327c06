#!/usr/bin/env bash
# Download, here, the wheels that benchmarks/gpu_check.sh needs on a lent GPU machine (Python 3.12, x86-64,
# with torch but without gymnasium/mujoco/minari/tyro) into .whl/ at the repository root (git-ignored locally
# through the repository's info/exclude). Then carry `.whl` with the device run. About 27 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
exclude=$(git rev-parse --git-path info/exclude)   # .git/info/exclude, also in a worktree
mkdir -p "$(dirname "$exclude")"
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
for pkg in gymnasium==1.2.2 mujoco==4.0.0 mujoco-core==4.0.0 mujoco-studio==4.0.0 glfw pyopengl websockets \
           minari==0.5.4 farama-notifications tyro==1.0.17 docstring-parser typeguard typing-extensions; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .whl "$pkg"
done
ls -la .whl
