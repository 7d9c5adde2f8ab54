"""Importing this makes time.sleep work under the e2e suite's clock-moved
run (docs/reliability.md, "The clock moved"): with libfaketime 0.9.10
(Debian 12) and FAKETIME_DONT_FAKE_MONOTONIC=1, Python's time.sleep -- an
absolute clock_nanosleep on CLOCK_MONOTONIC -- fails with EINVAL. Sleep
through select() then, which libfaketime passes through unchanged.
Without libfaketime, nothing changes. Used by tests/e2e/harness.py and
tests/fake_google.py (which also runs as its own process)."""
import select
import time


def _sleep_works():
    try:
        time.sleep(0.0001)
        return True
    except OSError:
        return False


def _select_sleep(secs):
    deadline = time.monotonic() + secs
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        select.select([], [], [], left)


if not _sleep_works():
    time.sleep = _select_sleep
