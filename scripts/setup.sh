#!/usr/bin/env bash
# Creates .venv with a suitable Python (>= 3.12) and installs Kizuna into it.
# Idempotent: re-running only installs what changed. Used by `make demo` and `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

find_python() {
    local candidates=()
    [ -n "${KIZUNA_PYTHON:-}" ] && candidates+=("$KIZUNA_PYTHON")
    if [ -f .python-version ]; then
        local v; v=$(tr -d '[:space:]' < .python-version)
        candidates+=("python$v")
        if command -v pyenv >/dev/null 2>&1; then
            local p; p=$(pyenv root 2>/dev/null)/versions
            for d in "$p/$v" "$p/$v".*; do [ -x "$d/bin/python" ] && candidates+=("$d/bin/python"); done
        fi
    fi
    candidates+=(python3.14 python3.13 python3.12)
    for d in "$HOME"/.pyenv/versions/3.1[2-9]* /usr/local/bin /usr/bin; do
        for exe in "$d"/bin/python3 "$d"/python3.1[2-9]; do [ -x "$exe" ] && candidates+=("$exe"); done
    done
    candidates+=(python3)
    for c in "${candidates[@]}"; do
        local exe; exe=$(command -v "$c" 2>/dev/null) || continue
        if "$exe" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; then
            echo "$exe"; return 0
        fi
    done
    return 1
}

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; then
    py=$(find_python) || {
        echo "Kizuna needs Python 3.12 or newer, and none was found." >&2
        echo "Install one (for example: 'pyenv install 3.13', or 'apt-get install python3.13 python3.13-venv')," >&2
        echo "or point KIZUNA_PYTHON at it: KIZUNA_PYTHON=/path/to/python3.13 make demo" >&2
        exit 1
    }
    echo "Creating .venv with $py ($("$py" --version))"
    rm -rf .venv
    "$py" -m venv .venv
fi

stamp=.venv/.kizuna-installed
extras=""
[ $want_test = 1 ] && extras="[test]"
sig="$(cat pyproject.toml | sha256sum | cut -c1-16)$extras"
if [ ! -f "$stamp" ] || ! grep -qxF -- "$sig" "$stamp"; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".$extras"
    echo "$sig" >> "$stamp"
fi
