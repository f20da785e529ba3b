#!/usr/bin/env bash
# Install checks that make test does not run (slow; documented in the README):
#  1. `python -m build` makes a wheel (serve's page inside) that installs and runs `imgcls --help`;
#  2. that wheel installs into fresh venvs of Python 3.10 and 3.12 and its CLI starts there.
# Other Pythons get --no-deps: on this machine only Python 3.11 has a local torch build, and pulling
# CUDA torch builds for other interpreters means gigabytes of downloads.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
.venv/bin/pip install -q build >/dev/null
.venv/bin/python -m build --wheel --outdir "$work/dist" . >/dev/null
wheel=$(ls "$work"/dist/imgcls-*.whl)
unzip -l "$wheel" | grep -q "imgcls/serve/page.html" || { echo "page.html missing from the wheel"; exit 1; }
echo "built $(basename "$wheel") (serve/page.html inside)"
python3.11 -m venv "$work/v311"
"$work/v311/bin/pip" install -q -c constraints.txt "$wheel" 2>&1 | grep -v "is ignored" || true
"$work/v311/bin/imgcls" --help >/dev/null && echo "3.11: full install, imgcls --help ok"
models=$("$work/v311/bin/imgcls" models --num-classes 3)
grep -q attn_cnn <<<"$models" && echo "3.11: imgcls models ok"
for v in 3.10 3.12; do
  py=""
  for candidate in $(ls -d /root/.pyenv/versions/$v*/bin/python$v 2>/dev/null) $(command -v "python$v" || true); do
    if "$candidate" -c pass 2>/dev/null; then py=$candidate; break; fi
  done
  [ -n "$py" ] || { echo "python$v not found: skipped"; continue; }
  "$py" -m venv "$work/v$v"
  "$work/v$v/bin/pip" install -q --no-deps "$wheel" pyyaml 2>&1 | grep -v "is ignored" || true
  "$work/v$v/bin/imgcls" --help >/dev/null && echo "$v: wheel installs (--no-deps), imgcls --help ok"
done
