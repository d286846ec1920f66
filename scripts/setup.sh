#!/usr/bin/env bash
# Set up a checkout for `make demo` and `make test`: a virtual environment in .venv with torch,
# torchvision and the project, plus Fashion-MNIST for the demo. Safe to run again: each step is
# skipped when its stamp in .venv says it is done, so a second run is instant and uses no network.
#
# Settings (the Makefile passes them): PYTHON (python3), VENV (.venv), EXTRAS (test,autoattack),
# TORCH_PIP_ARGS (extra pip arguments for torch, e.g. a CPU-only --index-url).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
EXTRAS="${EXTRAS:-test,autoattack}"
TORCH_PIP_ARGS="${TORCH_PIP_ARGS:-}"

say() { echo "setup: $*"; }
die() { echo "setup: error: $*" >&2; exit 1; }

# --- Python >= 3.10 with venv ----------------------------------------------------------------------
command -v "$PYTHON" >/dev/null 2>&1 || die "'$PYTHON' not found; install Python >= 3.10 or run: make PYTHON=/path/to/python3.10+"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || die "iat needs Python >= 3.10, '$PYTHON' is $("$PYTHON" -c 'import platform; print(platform.python_version())'); run: make PYTHON=python3.11 (or any >= 3.10)"

if [ ! -e "$VENV" ]; then
  # Debian and Ubuntu ship venv's pip bootstrap (ensurepip) separately, in python3-venv.
  "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1 \
    || die "'$PYTHON' cannot create virtual environments; on Debian/Ubuntu: sudo apt-get install python3-venv (or python3.X-venv for your version)"
  say "creating $VENV with $("$PYTHON" -c 'import sys; print(sys.executable)')"
  "$PYTHON" -m venv "$VENV" || { rm -rf "$VENV"; die "'$PYTHON -m venv $VENV' failed (see above)"; }
elif ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
  # Never deleted for you: it may be someone else's, or hold things you installed.
  die "$VENV exists but its Python does not run (its base Python moved or was removed?); 'make clean-venv' and run again"
else
  version='import sys; print("%d.%d" % sys.version_info[:2])'
  [ "$("$PYTHON" -c "$version")" = "$("$VENV/bin/python" -c "$version")" ] \
    || say "note: $VENV has Python $("$VENV/bin/python" -c "$version"), not $PYTHON's; 'make clean-venv' first to rebuild it"
fi
PIP=("$VENV/bin/python" -m pip)

# --- torch and torchvision: once per venv (the largest download, ~5 GB with CUDA) ------------------
if [ ! -f "$VENV/.stamp-torch" ]; then
  say "installing torch and torchvision (first time only; a large download)"
  # shellcheck disable=SC2086  # TORCH_PIP_ARGS is a list of words on purpose
  "${PIP[@]}" install -q torch torchvision $TORCH_PIP_ARGS
  touch "$VENV/.stamp-torch"
fi

# --- the project: again whenever pyproject.toml or the extras change -------------------------------
key="$(cat pyproject.toml; echo "extras=$EXTRAS")"
key="$(printf '%s' "$key" | "$VENV/bin/python" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')"
if [ "$(cat "$VENV/.stamp-project" 2>/dev/null)" != "$key" ]; then
  say "installing iat with extras [$EXTRAS]"
  "${PIP[@]}" install -q -e ".[$EXTRAS]"
  echo "$key" > "$VENV/.stamp-project"
fi

# --- Fashion-MNIST (the demo's data, and a few tests') ---------------------------------------------
# iat looks in /usr/share/datasets/fashion-mnist (Debian's package) and then in $IAT_DATA_DIR
# (default ~/.cache/iat/data).
data_dir="${IAT_DATA_DIR:-$HOME/.cache/iat/data}"
have_data() {
  local d
  for d in /usr/share/datasets/fashion-mnist "$data_dir" "$data_dir/FashionMNIST/raw"; do
    if [ -e "$d/t10k-images-idx3-ubyte" ] || [ -e "$d/t10k-images-idx3-ubyte.gz" ]; then return 0; fi
  done
  return 1
}
if ! have_data; then
  if [ "$(id -u)" = 0 ]; then SUDO=()
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO=(sudo -n)  # password-less sudo
  else SUDO=(none); fi
  if [ "${SUDO[0]:-}" != none ] && command -v apt-get >/dev/null; then
    say "installing Fashion-MNIST: apt-get install dataset-fashion-mnist"
    APT=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -y -q)  # env: sudo drops the variable
    "${APT[@]}" install dataset-fashion-mnist >/dev/null 2>&1 \
      || { "${APT[@]}" update >/dev/null && "${APT[@]}" install dataset-fashion-mnist >/dev/null; } \
      || say "apt-get could not install dataset-fashion-mnist (the demo and a few tests need it); try 'make data'"
  else
    say "Fashion-MNIST not found (the demo and a few tests need it): run 'sudo apt-get install dataset-fashion-mnist', or 'make data' to download it into $data_dir"
  fi
fi
