#!/bin/sh
# Make sure Debian's Chromium is present for the browser test (tests/test_e2e_ui.py).
#
# Idempotent: does nothing when /usr/bin/chromium exists. Otherwise, when running as root on a system with
# apt-get, installs Debian's `chromium` package (no recommended packages). Always exits 0: when Chromium cannot
# be installed the browser test skips and says why.
#
#     sh tools/ensure_browser.sh
#
# Measured on a busy 2-core Debian 12 (bookworm) machine: apt-get update plus the install (25 packages, 113 MB
# downloaded, 414 MB on disk) took 26 s wall time.

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
    echo "ensure_browser: $CHROMIUM is already installed: $("$CHROMIUM" --version 2>/dev/null)"
    exit 0
fi

if [ "$(id -u 2>/dev/null)" != "0" ]; then
    echo "ensure_browser: $CHROMIUM is missing and this is not root; install it with"
    echo "    sudo apt-get update && sudo apt-get install -y --no-install-recommends chromium"
    echo "ensure_browser: the browser test will be skipped"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_browser: $CHROMIUM is missing and there is no apt-get; install Chromium with your package"
    echo "    manager so that $CHROMIUM exists. The browser test will be skipped."
    exit 0
fi

echo "ensure_browser: installing Debian's chromium (apt-get update, then apt-get install chromium)"
start=$(date +%s)
if ! DEBIAN_FRONTEND=noninteractive apt-get update -q; then
    echo "ensure_browser: apt-get update failed; the browser test will be skipped"
    exit 0
fi
if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; then
    echo "ensure_browser: apt-get install chromium failed; the browser test will be skipped"
    exit 0
fi
end=$(date +%s)

if [ -x "$CHROMIUM" ]; then
    echo "ensure_browser: installed $("$CHROMIUM" --version 2>/dev/null || echo chromium) in $((end - start)) s"
else
    echo "ensure_browser: the chromium package installed but $CHROMIUM is missing; the browser test will be skipped"
fi
exit 0
