#!/usr/bin/env bash
# Everything the test suite needs on a fresh Debian machine, as root: system packages
# (servers the tests start themselves), then a virtual environment of the project's own
# (.venv, made here when missing, so the machine's Python and its packages cannot hide a
# missing pin), torch first and alone into it (the CPU build on disk; any other torch request
# pulls CUDA wheels), then edge with its dev extra.
set -euo pipefail
cd "$(dirname "$0")/.."

# openssh-server: tests start private sshd instances on loopback (tests/lab.py).
# chromium: tests render the HTML report headless.
# postgresql: tests start a private server for the shared results store (tests/postgres.py).
SYSTEM_PACKAGES=(openssh-server chromium postgresql)
missing=()
for package in "${SYSTEM_PACKAGES[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if ((${#missing[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install torch==2.13.0
.venv/bin/python -m pip install -e '.[dev]'
