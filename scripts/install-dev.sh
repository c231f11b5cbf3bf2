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
# gcc: tests build a tiny TFLite delegate library (tests/test_accelerators.py).
SYSTEM_PACKAGES=(openssh-server chromium postgresql gcc)
missing=()
for package in "${SYSTEM_PACKAGES[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if ((${#missing[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

# Mesa's lavapipe (a software Vulkan driver) for the GPU accelerator test: LiteRT's WebGPU
# accelerator rejects Debian 12's Mesa 22.3 ("No adapters found"), and Mesa 25 from
# bookworm-backports works.  Later releases carry a new enough Mesa themselves.
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
if [ "$codename" = bookworm ]; then
    if ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
        cat > /etc/apt/sources.list.d/bookworm-backports.sources <<'SOURCE'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCE
    fi
    if ! dpkg-query -W -f '${Version}' mesa-vulkan-drivers 2>/dev/null | grep -q bpo; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t bookworm-backports \
            mesa-vulkan-drivers
    fi
elif ! dpkg -s mesa-vulkan-drivers >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mesa-vulkan-drivers
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install torch==2.13.0
.venv/bin/python -m pip install -e '.[dev]'
