#!/usr/bin/env bash
# Make .venv with hepai-server and its test tools, at the versions in constraints.txt, and
# install the Debian packages the tests drive (Chromium for pages; browsers are never
# downloaded at run time). Safe to run again: it only installs what is missing.
# --fast: only what the in-process tier needs (no MinerU environment, no Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
fast=false
if [ "${1:-}" = "--fast" ]; then
    fast=true
fi

python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
"$python" -c 'import sys; assert sys.version_info[:2] == (3, 11), "hepai-server needs Python 3.11"'

# pip byte-compiles what it installs: left to import time instead (--no-compile), the
# compiler's warnings about old packages' escape sequences (jieba's) become the tests' errors.
pip_install=(-m pip install --quiet --disable-pip-version-check)

# MinerU (2.x) in its own environment: its pins clash with docvortex's (pypdfium2), and the
# platform only talks to it over HTTP (mineru-api), as it does on a GPU node. The tests run
# it with its vlm-http-client backend against a stand-in for the VLM (no model weights).
# Installed beside .venv, at the same time: the two are independent.
mineru=""
if ! $fast; then
    if [ ! -x .venv-mineru/bin/python ]; then
        "$python" -m venv .venv-mineru
    fi
    stamp=$(sha256sum constraints-mineru.txt | cut -d' ' -f1)
    if [ "$(cat .venv-mineru/.installed 2>/dev/null)" != "$stamp" ]; then
        (
            .venv-mineru/bin/python "${pip_install[@]}" -c constraints-mineru.txt 'mineru[api]'
            echo "$stamp" > .venv-mineru/.installed
        ) &
        mineru=$!
    fi
fi

if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
# Reinstall only when the pins changed since the last install.
stamp=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat .venv/.installed 2>/dev/null)" != "$stamp" ]; then
    .venv/bin/python "${pip_install[@]}" -c constraints.txt -e '.[test]'
    echo "$stamp" > .venv/.installed
fi
if [ -n "$mineru" ]; then
    wait "$mineru"  # its failure fails the setup (set -e)
fi

# Debian packages, each with a file that shows it is installed: Chromium for the page tests,
# Tesseract with its Chinese and English data for OCR, fonts to draw test documents with, and
# nginx and Redis for the deployment topology the tests build (tests/topology.py).
declare -A packages=(
    [chromium]=/usr/bin/chromium
    [nginx]=/usr/sbin/nginx
    [redis-server]=/usr/bin/redis-server
    [tesseract-ocr]=/usr/bin/tesseract
    [tesseract-ocr-eng]=/usr/share/tesseract-ocr/5/tessdata/eng.traineddata
    [tesseract-ocr-chi-sim]=/usr/share/tesseract-ocr/5/tessdata/chi_sim.traineddata
    [fonts-dejavu-core]=/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
    [fonts-wqy-microhei]=/usr/share/fonts/truetype/wqy/wqy-microhei.ttc
)
if $fast; then
    unset 'packages[chromium]'
fi
missing=()
for package in "${!packages[@]}"; do
    [ -e "${packages[$package]}" ] || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=$([ "$(id -u)" = 0 ] || echo sudo)
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
