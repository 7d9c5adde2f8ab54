/* fault.c -- named crash points (kill -9 at an exact instant). See fault.h
 * and docs/internals/fault.md.
 *
 * Data: the table of known point names (the only place a name is
 * declared; docs/internals/fault.md describes each), and the armed list
 * parsed from CALSYNC_FAULT: up to FAULT_MAX_ARMED (name, N, hits) entries.
 * Hits are counted with atomics, so the N-th hit is exactly one thread's.
 */
#include "fault.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FAULT_MAX_ARMED 16
#define FAULT_NAME_MAX 64

atomic_int fault_state = 0;

/* Every point compiled into calsync. Names are never reused. */
static const char *const fault_names[] = {
    /* intake.c */
    "intake_after_journal",
    "intake_flush_before_commit",
    "intake_flush_after_commit",
    /* sync.c */
    "sync_after_token_drop",
    /* "sync_page_before_commit" is retired: a page is no longer one
     * transaction (sync_batch_before_commit is the nearest instant) */
    "sync_after_decide",
    "sync_batch_before_commit",
    "sync_batch_after_commit",
    "sync_page_after_commit",
    "sync_last_page_after_commit",
    "sync_after_deleted_reported",
    "sync_after_relink",
    /* apply.c */
    "apply_after_audit",
    "apply_after_booking_save",
    "apply_after_outbox_enqueue",
    "apply_after_relink_refs",
    /* outbox.c */
    "outbox_after_post_ok",
    "outbox_after_post_error",
    "outbox_after_record",
    /* writer.c */
    "writer_after_insert",
    "writer_after_adopt",
    "writer_after_patch",
    "writer_after_delete",
    "writer_after_commit",
    /* channel.c */
    "channel_after_opening_row",
    "channel_after_watch",
    "channel_after_live",
    "channel_after_renew",
    "channel_after_open_before_stop",
    "channel_after_stop",
};

struct armed {
    char name[FAULT_NAME_MAX];
    long n;
    atomic_long hits;
};

static struct armed armed[FAULT_MAX_ARMED];
static int n_armed;
static pthread_once_t fault_once = PTHREAD_ONCE_INIT;

int fault_count(void)
{
    return (int)(sizeof fault_names / sizeof fault_names[0]);
}

const char *fault_name(int i)
{
    return i >= 0 && i < fault_count() ? fault_names[i] : NULL;
}

static int known(const char *name)
{
    for (int i = 0; i < fault_count(); i++)
        if (strcmp(fault_names[i], name) == 0)
            return 1;
    return 0;
}

/* "name[:N][,name[:N]...]"; N defaults to 1. Bad entries are reported and
 * skipped: a test that misspells a point must not pass by not crashing
 * silently, so the report names the entry. */
static void parse(void)
{
    const char *spec = getenv("CALSYNC_FAULT");
    n_armed = 0;
    if (spec) {
        const char *p = spec;
        while (*p && n_armed < FAULT_MAX_ARMED) {
            size_t len = strcspn(p, ",");
            char item[FAULT_NAME_MAX + 32];
            if (len > 0 && len < sizeof item) {
                memcpy(item, p, len);
                item[len] = '\0';
                char *colon = strchr(item, ':');
                long n = 1;
                int ok = 1;
                if (colon) {
                    char *end;
                    *colon = '\0';
                    n = strtol(colon + 1, &end, 10);
                    ok = *end == '\0' && n >= 1;
                }
                if (ok && known(item) && strlen(item) < FAULT_NAME_MAX) {
                    struct armed *a = &armed[n_armed++];
                    memcpy(a->name, item, strlen(item) + 1); /* fits: checked above */
                    a->n = n;
                    atomic_init(&a->hits, 0);
                } else {
                    fprintf(stderr, "level=error event=fault.bad_spec entry=\"%.*s\"\n",
                            (int)len, p);
                }
            }
            p += len;
            if (*p == ',')
                p++;
        }
    }
    if (n_armed > 0) {
        for (int i = 0; i < n_armed; i++)
            fprintf(stderr, "level=warn event=fault.armed point=%s n=%ld\n",
                    armed[i].name, armed[i].n);
        atomic_store(&fault_state, 2);
    } else {
        atomic_store(&fault_state, 1);
    }
}

void fault_init(void)
{
    pthread_once(&fault_once, parse);
}

void fault_hit(const char *name)
{
    if (!name)
        return; /* a point that does not apply on this path */
    fault_init();
    if (atomic_load(&fault_state) != 2)
        return;
    for (int i = 0; i < n_armed; i++) {
        struct armed *a = &armed[i];
        if (strcmp(a->name, name) != 0)
            continue;
        long h = atomic_fetch_add(&a->hits, 1) + 1;
        if (h == a->n) {
            char line[160];
            int len = snprintf(line, sizeof line,
                               "level=error event=fault.kill point=%s hit=%ld pid=%ld\n",
                               name, h, (long)getpid());
            if (len > 0)
                (void)!write(STDERR_FILENO, line, (size_t)len < sizeof line ? (size_t)len
                                                                          : sizeof line - 1);
            raise(SIGKILL);
            for (;;)
                pause(); /* SIGKILL is never delivered late, but never return */
        }
    }
}
