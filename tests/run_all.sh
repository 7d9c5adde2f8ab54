#!/bin/sh
# Runs every test suite and prints one closing line "N passed, N failed"
# (suites, each a program or a spec run). Usage: tests/run_all.sh [SUITE...]
# where SUITE is unit, asan-unit, spec, fake, e2e, e2e-asan, memcheck
# (default: all).
set -u
cd "$(dirname "$0")/.."
suites="${*:-unit asan-unit spec fake e2e e2e-asan memcheck}"
pass=0; fail=0; failed=""
run() { # name, command...
    name=$1; shift
    echo "=== $name"
    if "$@"; then pass=$((pass+1)); else fail=$((fail+1)); failed="$failed $name"; fi
}
for s in $suites; do
    case $s in
    unit)
        for t in build/tests/test_*; do [ -x "$t" ] && run "unit:$(basename "$t")" "$t"; done ;;
    asan-unit)
        for t in build/asan/tests/test_*; do
            [ -x "$t" ] && run "asan-unit:$(basename "$t")" env ASAN_OPTIONS=detect_leaks=1 "$t"
        done ;;
    spec)
        if ls spec/*_spec.lua >/dev/null 2>&1; then run spec lua5.4 /usr/bin/busted; fi ;;
    fake)
        run fake-google python3 -m unittest tests/test_fake_google.py ;;
    e2e)
        run e2e env CALSYNC_BIN=build/calsync python3 -m unittest discover -s tests/e2e -p 'test_*.py' ;;
    e2e-asan)
        run e2e-asan env CALSYNC_BIN=build/asan/calsync CALSYNC_SANITIZED=1 \
            ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
            python3 -m unittest discover -s tests/e2e -p 'test_*.py' ;;
    memcheck)
        # the end-to-end scenarios under valgrind: any error or definite
        # leak makes the service exit 99, which fails the clean stop
        run memcheck sh -c 'cd tests/e2e && CALSYNC_BIN=build/calsync \
            CALSYNC_WRAPPER="valgrind -q --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99" \
            python3 -m unittest test_api.TestLifecycle test_reverse.TestDefaultPolicy \
                test_forward.TestWrites.test_create_patch_cancel_with_silent_echoes test_channels' ;;
    *) echo "unknown suite $s" >&2; exit 2 ;;
    esac
done
echo
[ -n "$failed" ] && echo "failed suites:$failed"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
