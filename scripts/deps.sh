#!/usr/bin/env bash
# Installs what the project needs on Debian 12, and only what is missing:
# the Debian packages listed in scripts/debian-packages.txt (plus
# bindings/lua/DEPS), then a virtualenv in .venv made from Debian's python3
# with --system-site-packages (pytest, azure-servicebus and friends come from
# Debian; PyPI is never used). Safe to run again: it does nothing when all is
# there. Uses sudo when not run as root.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

want=$(cat scripts/debian-packages.txt bindings/lua/DEPS 2>/dev/null \
        | sed 's/#.*//' | tr -s ' \t' '\n' | sed '/^$/d' | sort -u)
missing=()
for p in $want; do
    st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [ "$st" = "install ok installed" ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "deps: installing ${missing[*]}"
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    # The package lists may be stale or absent on a fresh machine.
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

py=/usr/bin/python3
if [ ! -x .venv/bin/python ]; then
    echo "deps: creating .venv from $py"
    "$py" -m venv --system-site-packages .venv
fi
