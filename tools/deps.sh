#!/bin/sh
# Installs the Debian 12 packages calsync needs to build and test, and only
# those that are missing: a machine that has them all runs no apt-get at all.
# Each package and why it is here is listed in README.md ("Dependencies").
set -eu
PKGS="build-essential pkg-config git
liblua5.4-dev lua5.4 lua-cjson-dev lua-cjson
libcurl4-openssl-dev libmicrohttpd-dev libsqlite3-dev libssl-dev
libcmocka-dev lua-busted python3 valgrind"
# --bench adds what only `make bench` needs (never `make test`): wrk (HTTP
# load), gnuplot-nox (docs/performance-scaling.png), valgrind (callgrind
# instruction counts).
BENCH_PKGS="wrk gnuplot-nox valgrind"
quiet=0
for a in "$@"; do
    case "$a" in
    --quiet) quiet=1 ;;
    --bench) PKGS="$PKGS $BENCH_PKGS" ;;
    esac
done
missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing="$missing $p"
    fi
done
if [ -z "$missing" ]; then
    [ $quiet = 1 ] || echo "deps: all packages present"
    exit 0
fi
echo "deps: installing:$missing"
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
        echo "deps: not root and no sudo; install as root: apt-get install$missing" >&2
        exit 1
    fi
else
    SUDO=""
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
