#!/bin/sh
# fuzz/run.sh -- runs the libFuzzer targets built by `make fuzz-build`.
#
#   FUZZ_SECONDS=30 sh fuzz/run.sh [target ...]     (default: every target)
#
# Each target runs FUZZ_SECONDS on its growing corpus build/fuzz/corpus/T,
# seeded from fuzz/seeds/T (hand-made, committed) and build/fuzz/seeds/T
# (generated from the tests and fixtures by fuzz/make_seeds.py). A crash,
# leak, timeout or failed property is saved under build/fuzz/crashes/T/;
# reproduce it with `build/fuzz/T FILE`. Prints per target: executions,
# exec/s, new crashes; exits 1 if any target crashed.
set -u
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-30}
out=build/fuzz
targets=${*:-$(for f in fuzz/fuzz_*.c; do basename "$f" .c; done)}

mkdir -p "$out/logs" "$out/seeds"
# scratch files of the targets (fuzz_intake_headers' database)
rm -rf "$out/tmp" && mkdir -p "$out/tmp"
FUZZ_TMPDIR=$(pwd)/$out/tmp
export FUZZ_TMPDIR
python3 fuzz/make_seeds.py "$out/seeds" >/dev/null || echo "fuzz: seed generation failed; hand-made seeds only" >&2

dict_for() {
    case "$1" in
    fuzz_json_api|fuzz_google_event) echo fuzz/dict/json.dict ;;
    fuzz_rfc3339) echo fuzz/dict/rfc3339.dict ;;
    fuzz_config) echo fuzz/dict/config.dict ;;
    fuzz_http_match) echo fuzz/dict/http.dict ;;
    fuzz_instance_id) echo fuzz/dict/instance_id.dict ;;
    fuzz_intake_headers) echo fuzz/dict/intake.dict ;;
    esac
}

count_artifacts() {
    find "$1" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'leak-*' -o \
        -name 'timeout-*' -o -name 'oom-*' \) 2>/dev/null | wc -l
}

total_execs=0
total_crashes=0
printf '%-22s %12s %10s %8s %8s\n' target executions exec/s corpus crashes
for t in $targets; do
    bin=$out/$t
    if [ ! -x "$bin" ]; then
        echo "fuzz: $bin missing (make fuzz-build)" >&2
        total_crashes=$((total_crashes + 1))
        continue
    fi
    corpus=$out/corpus/$t
    crashes=$out/crashes/$t
    mkdir -p "$corpus" "$crashes" "fuzz/seeds/$t" "$out/seeds/$t"
    before=$(count_artifacts "$crashes")
    dict=$(dict_for "$t")
    log=$out/logs/$t.log
    # -timeout: one input may not run 10 s; the config's own caps must stop
    # it first. -rss_limit_mb: the product's memory caps are far below.
    "$bin" "$corpus" "fuzz/seeds/$t" "$out/seeds/$t" \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$crashes/" -print_final_stats=1 \
        ${dict:+-dict=$dict} >"$log" 2>&1
    rc=$?
    after=$(count_artifacts "$crashes")
    new=$((after - before))
    if [ "$rc" != 0 ] && [ "$new" = 0 ]; then
        new=1   # died without an artifact: count it, the log says why
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    if [ -z "$execs" ]; then # killed before the final stats: last status line
        execs=$(sed -n 's/^#\([0-9]*\).*/\1/p' "$log" | tail -1)
    fi
    execs=${execs:-0}
    size=$(find "$corpus" -type f | wc -l)
    if [ -z "$rate" ] || [ "$rate" = 0 ]; then
        rate=$((execs / (secs > 0 ? secs : 1)))
    fi
    printf '%-22s %12s %10s %8s %8s\n' "$t" "$execs" "$rate" "$size" "$new"
    if [ "$new" != 0 ]; then
        grep -E 'ERROR|SUMMARY|property failed|runtime error' "$log" | head -5 | sed 's/^/    /'
        ls -t "$crashes" | head -3 | sed "s|^|    reproduce: $bin $crashes/|"
    fi
    total_execs=$((total_execs + execs))
    total_crashes=$((total_crashes + new))
done
printf '%-22s %12s %10s %8s %8s\n' total "$total_execs" "" "" "$total_crashes"
[ "$total_crashes" = 0 ]
