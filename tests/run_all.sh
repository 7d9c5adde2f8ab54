#!/bin/sh
# Runs every test suite, independent jobs in parallel, and prints one
# closing line "N passed, N failed". Usage: tests/run_all.sh [SUITE...]
# (unit asan-unit spec fake pg e2e e2e-asan memcheck e2e-faketime); see
# tests/run_all.py.
cd "$(dirname "$0")/.." || exit 2
exec python3 tests/run_all.py "$@"
