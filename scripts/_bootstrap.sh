# Sourced by scripts/test and scripts/demo: a virtualenv in .venv with retrotread installed,
# on a fresh Debian machine with only Python 3.11 (python3-venv is installed if it is missing).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
    echo "need root to run: $*" >&2; return 1; fi
}

# Debian packages the suite or the demo needs, installed only when missing: PACKAGE:COMMAND, or
# PACKAGE:/path/of/a/file/it/installs for a package that brings no command (headers, cores).
ensure_debs() {
  local missing=()
  for spec in "$@"; do
    local pkg="${spec%%:*}" what="${spec#*:}"
    if [ "${what#/}" != "$what" ]; then
      [ -e "$what" ] || missing+=("$pkg")
    else
      command -v "$what" >/dev/null 2>&1 || [ -x "/usr/sbin/$what" ] || missing+=("$pkg")
    fi
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "retrotread needs Python 3.11 or newer; $PYTHON is $("$PYTHON" --version 2>&1)" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  if ! "$PYTHON" -m venv .venv 2>/dev/null; then
    rm -rf .venv
    echo "python3 -m venv failed; installing Debian's python3-venv" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    "$PYTHON" -m venv .venv
  fi
fi
# The card's folders install as retrotread.* through a strict editable install: a tree of links
# under build/ that mypy and the tests see as real files. A module added or removed needs a new
# link, so reinstall when pyproject.toml or the set of package files changed since the last install.
extras="${RETROTREAD_EXTRAS:-test}"
stamp=".venv/.installed-${extras//,/-}"
want="$( { sha256sum pyproject.toml; find api daemon drivers safety sims -type f \( -name '*.py' -o -name py.typed -o -path 'api/static/*' \) | LC_ALL=C sort; } | sha256sum)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".[${extras}]" --config-settings editable_mode=strict
  echo "$want" > "$stamp"
fi
