#!/usr/bin/env bash
# Debian's Chromium, for the browser tests (tests/browser). Playwright drives it by path;
# a browser download (`playwright install`) does not work here, the package does.
set -euo pipefail
[[ -x /usr/bin/chromium ]] && exit 0
sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y -q chromium || { $sudo apt-get update -q && $sudo apt-get install -y -q chromium; }
