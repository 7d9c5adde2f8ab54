/* mem_provider.h -- a test-only provider over in-memory events (tests/unit).
 *
 * It implements provider_ops with a raw shape of its own (not Google's),
 * so a test against it proves the engine depends on the ops table only.
 * A calendar is one global list of events; every change bumps a sequence
 * number, and a cursor is "c<seq>.<epoch>": list_changes with one returns the
 * events changed after it. Tests steer it through the functions below:
 * page size, an expired cursor, failures of the next calls.
 * Single-threaded: call from the test thread only (sync_calendar runs on
 * it too).
 */
#ifndef CALSYNC_MEM_PROVIDER_H
#define CALSYNC_MEM_PROVIDER_H

#include "provider/provider.h"

#include <stdint.h>

extern const struct provider_ops mem_provider;

/* Forgets every event, call count, failure and setting. */
void mem_reset(void);

/* Puts (creates or replaces) an event; bumps its version. series may be
 * NULL. The id of an occurrence is free-form here (no id grammar). */
void mem_put(const char *id, const char *title, int64_t start_ms, int64_t end_ms,
             const char *series, int64_t original_start_ms);
/* Marks it cancelled (a deletion the change listing reports). bare: the
 * stub names nothing but its id (provider_event.bare; the series is the
 * id's part before '/') and the occurrence listing no longer shows it, as
 * for an occurrence a series change removed. */
void mem_cancel(const char *id, int bare);
/* Removes it without a trace (a deletion only a full listing notices,
 * or an occurrence a series change dropped). */
void mem_drop(const char *id);
/* Lists event id malformed from now on (its id, then a field of the wrong
 * type: normalise answers -1 with the id read). */
void mem_break(const char *id);

/* Items per page (default 100). */
void mem_set_page_size(int n);
/* Every cursor issued so far is refused from now on (PROVIDER_RESYNC). */
void mem_expire_cursors(void);
/* After `after` more successful list_changes calls, the next n fail with
 * rc (a provider class); a PROVIDER_REVOKED failure revokes the
 * credential first, as a provider must. */
void mem_fail_next(int rc, int n, int after);

/* Calls made so far. */
int mem_list_calls(void);
int mem_full_list_calls(void);
int mem_occurrence_calls(void);

#endif
