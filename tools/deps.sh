#!/bin/sh
# Installs the Debian 12 packages calsync needs to build and test, and only
# those that are missing: a machine that has them all runs no apt-get at all.
# Each package and why it is here is listed in README.md ("Dependencies").
# --fuzz adds the fuzzing toolchain (docs/reliability.md, "Fuzzing").
set -eu
PKGS="build-essential pkg-config git
liblua5.4-dev lua5.4 lua-cjson-dev lua-cjson
libcurl4-openssl-dev libmicrohttpd-dev libsqlite3-dev libssl-dev
libcmocka-dev lua-busted python3 valgrind wrk faketime
prometheus groff-base systemd tzdata
libpq-dev postgresql postgresql-client
python3-jsonschema python3-yaml chromium"
# --bench adds what only `make bench` needs (never `make test`):
# gnuplot-nox (docs/performance-scaling.png); wrk (HTTP load) and valgrind
# (callgrind instruction counts) are in the base list already.
BENCH_PKGS="gnuplot-nox"
quiet=0
for arg in "$@"; do
    case $arg in
    --quiet) quiet=1 ;;
    --bench) PKGS="$PKGS $BENCH_PKGS" ;;
    # `make fuzz` only: clang and libFuzzer's runtime (libclang_rt.fuzzer
    # ships in libclang-rt-14-dev on Debian 12; libfuzzer-14-dev is the
    # standalone library, not needed with -fsanitize=fuzzer)
    --fuzz) PKGS="$PKGS clang-14 clang libclang-rt-14-dev" ;;
    *) echo "deps: unknown option $arg" >&2; exit 2 ;;
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
