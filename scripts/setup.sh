# Sourced by scripts/serve and scripts/test: a virtual environment in .venv with the
# project installed. torch goes in first, pinned, so that pip never resolves it itself
# (an unpinned torch pulls several GB of CUDA packages, even on a machine without a GPU).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
# cuda, cpu, or auto: cuda where nvidia-smi sees a GPU (a Docker build sees none: it says cuda).
TORCH_BUILD="${TORCH_BUILD:-auto}"
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.avatar-server-installed-${EXTRAS:-base}"

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

source "$ROOT/scripts/espeak.sh"
ensure_espeak

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "avatar-server needs Python 3.11 or newer ($PYTHON is $("$PYTHON" --version 2>&1))." >&2
  exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
  log "creating the virtual environment in $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

install_torch() {
  if "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    return
  fi
  local build="$TORCH_BUILD"
  if [ "$build" = auto ]; then
    build=cpu
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then build=cuda; fi
  fi
  if [ "$build" = cuda ]; then
    log "installing torch $TORCH_VERSION (CUDA build)"
    "${PIP[@]}" install "torch==$TORCH_VERSION"
  elif "${PIP[@]}" install --quiet --no-index --no-deps "torch==$TORCH_VERSION" >/dev/null 2>&1; then
    # A CPU wheel in pip's find-links (this machine's configuration): torch came from it;
    # its own dependencies come from the package index.
    log "installed torch $TORCH_VERSION from a local wheel; installing its dependencies"
    "${PIP[@]}" install --quiet "torch==$TORCH_VERSION"
  else
    log "installing torch $TORCH_VERSION (CPU build)"
    "${PIP[@]}" install "torch==$TORCH_VERSION" --index-url "${TORCH_CPU_INDEX_URL:-https://download.pytorch.org/whl/cpu}"
  fi
}

# Reinstall when the dependencies changed since the last install.
# (An install with the test extras also serves the plain one.)
wanted="$(cat "$ROOT/pyproject.toml" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)"
up_to_date() { [ -f "$1" ] && [ "$(cat "$1")" = "$wanted" ]; }
if ! up_to_date "$STAMP" && ! { [ -z "${EXTRAS:-}" ] && up_to_date "$VENV/.avatar-server-installed-test"; }; then
  install_torch
  log "installing avatar-server${EXTRAS:+ with [$EXTRAS]}"
  "${PIP[@]}" install --quiet -e "$ROOT${EXTRAS:+[$EXTRAS]}"
  # Packages whose declared dependencies must not be installed (pyproject.toml says why).
  # pip then reports those dependencies as missing after later installs: that is expected.
  read -r -a without_deps <<< "$("$VENV/bin/python" -c 'import sys, tomllib
print(" ".join(tomllib.load(open(sys.argv[1], "rb"))["tool"]["avatar-server"]["install-without-dependencies"]))' "$ROOT/pyproject.toml")"
  "${PIP[@]}" install --quiet --no-deps "${without_deps[@]}"
  echo "$wanted" > "$STAMP"
fi
