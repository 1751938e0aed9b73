#!/bin/sh
# Make sure a Debian package that some tests need is installed; they skip, saying why, where it cannot be.
#
#     sh tools/ensure_debian_package.sh PACKAGE PATH-GLOB WHAT
#
# Idempotent: does nothing when a file matching PATH-GLOB exists. Otherwise, when running as root on a system with
# apt-get, installs PACKAGE (no recommended packages). Always exits 0. Used by `make test` for `chromium` (the
# browser test) and `postgresql` (the team-store tests).
#
# Measured on a busy 2-core Debian 12 (bookworm) machine: apt-get update plus the chromium install (25 packages,
# 113 MB downloaded, 414 MB on disk) took 26 s wall time.

PACKAGE=$1
GLOB=$2
WHAT=$3

found() { ls $GLOB >/dev/null 2>&1; }

if found; then
    echo "ensure $PACKAGE: $(ls $GLOB | tail -n 1) is already installed"
    exit 0
fi
if [ "$(id -u 2>/dev/null)" != "0" ]; then
    echo "ensure $PACKAGE: missing and this is not root; install it with"
    echo "    sudo apt-get update && sudo apt-get install -y --no-install-recommends $PACKAGE"
    echo "ensure $PACKAGE: $WHAT will be skipped"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure $PACKAGE: missing and there is no apt-get; install it with your package manager."
    echo "ensure $PACKAGE: $WHAT will be skipped"
    exit 0
fi
echo "ensure $PACKAGE: installing Debian's $PACKAGE (apt-get update, then apt-get install $PACKAGE)"
start=$(date +%s)
if ! DEBIAN_FRONTEND=noninteractive apt-get update -q \
    || ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$PACKAGE"; then
    echo "ensure $PACKAGE: apt-get failed; $WHAT will be skipped"
    exit 0
fi
end=$(date +%s)
if found; then
    echo "ensure $PACKAGE: installed $(ls $GLOB | tail -n 1) in $((end - start)) s"
else
    echo "ensure $PACKAGE: the package installed but nothing matches $GLOB; $WHAT will be skipped"
fi
exit 0
