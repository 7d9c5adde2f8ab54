/* fault.h -- named crash points for crash-consistency tests, after SQLite's
 * fault-simulation hook (FaultSim). See docs/internals/fault.md.
 *
 * Every build carries the points, the release build included (so the crash
 * tests kill the binary that ships; docs/internals/fault.md gives the
 * measured cost and the reasons); they are inert unless the environment
 * variable CALSYNC_FAULT names one:
 *
 *     CALSYNC_FAULT=apply_after_audit:3      the 3rd hit kills the process
 *     CALSYNC_FAULT=a:1,b:2                  several points, each with its N
 *
 * A point that reaches its N-th hit writes one `event=fault.kill` line to
 * stderr and raises SIGKILL: the process dies at that exact instant, as
 * with `kill -9`, with no cleanup, no atexit, no sanitizer report.
 *
 * The variable is read once, on the first fault_point() call of any thread
 * (or fault_init()); later changes to the environment are ignored. When it
 * is unset the cost of a point is one relaxed load and one predictable
 * branch. Names are never reused: a point that moves or changes meaning
 * gets a new name, so old test seeds cannot silently test something else.
 */
#ifndef CALSYNC_FAULT_H
#define CALSYNC_FAULT_H

#include <stdatomic.h>

/* 0 not read yet, 1 inert (unset or empty), 2 armed. */
extern atomic_int fault_state;

/* Slow path: reads CALSYNC_FAULT once, counts the hit, kills on the N-th.
 * Never returns when it kills; never fails otherwise. */
void fault_hit(const char *name);

/* Marks a crash point. `name` must be a string literal listed in fault.c's
 * table (an unknown name in CALSYNC_FAULT is reported at parse time), or
 * NULL for "no point on this path" (keeps a conditional point one line). */
static inline void fault_point(const char *name)
{
    if (__builtin_expect(atomic_load_explicit(&fault_state, memory_order_relaxed) != 1, 0))
        fault_hit(name);
}

/* Reads CALSYNC_FAULT now (idempotent, thread-safe). Optional: the first
 * fault_point() does the same. */
void fault_init(void);

/* Number of known point names, and the i-th (NULL past the end), for
 * documentation checks and tests. */
int fault_count(void);
const char *fault_name(int i);

#endif
