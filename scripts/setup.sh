#!/usr/bin/env bash
# Fresh-machine set-up: a Python that has ttnn wheels (3.12, else 3.10), a virtualenv in .venv with
# the project, its worker extra (ttnn, torch) and dev tools, and redis-server and chromium from Debian if missing.
# Idempotent: re-running only reinstalls when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

works() { "$1" -c 'import sys, venv' >/dev/null 2>&1; }  # pyenv shims exist but may not run

find_python() {
    local v cand
    for v in 3.12 3.10; do
        cand=$(command -v "python$v" 2>/dev/null) && works "$cand" && { echo "$cand"; return 0; }
        for cand in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v".*/bin/python"$v"; do
            [ -x "$cand" ] && works "$cand" && { echo "$cand"; return 0; }
        done
    done
    return 1
}

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info[:2] not in ((3,10),(3,12)))'; then
    py=$(find_python) || { echo "setup: no Python 3.12 or 3.10 found (PATH or pyenv); ttnn has wheels for those only" >&2; exit 1; }
    echo "setup: creating .venv with $py"
    rm -rf .venv
    "$py" -m venv .venv
fi

stamp=.venv/.sweepctl-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: installing sweepctl[worker,dev] (torch is large the first time)"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[worker,dev]'
    touch "$stamp"
fi

# Debian packages: redis-server (tests and the embedded default), chromium (the HTML report test
# renders the page in a real headless browser).
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]} from Debian's packages"
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q "${missing[@]}"
fi
