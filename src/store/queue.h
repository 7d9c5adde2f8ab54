/* queue.h -- the durable queue under the writer's jobs and the outbox.
 *
 * One implementation for both tables (jobs, outbox): enqueue, claim the
 * due items of a lane with a lease, then per item complete, retry at a
 * later time, or fail. Items of one ordering key (the booking uid; NULL
 * is a key of its own for the outbox's calendar rows) are handed out
 * strictly in enqueue order: an item waits while an older one of its key
 * is pending, claimed or not, so a retry holds back the items behind it.
 *
 * Claims. A claim marks the items claimed_by = the claimer (an
 * instance/thread name) and claimed_until = now + QUEUE_LEASE_MS, in one
 * write transaction: two claimers never get the same item. Completing,
 * retrying or failing an item releases it; a claim whose lease expires
 * (its process died) makes the item claimable again. A claimer renews its
 * remaining claims as it completes items (queue_done and the others renew
 * once half the lease has passed), so a long batch keeps its lease.
 * With SQLite the process owns the database (store_claim), so at open
 * every claim left in it belongs to a dead process and is released
 * (queue_release_all, called by store_init) instead of waiting out its
 * lease: a restarted process carries on at once, as before claims. With
 * PostgreSQL, claims name their instance's liveness key and any instance
 * releases those whose key is no longer held (queue_release_dead). A
 * claimer's own claims are claimable by it (an outcome it could not
 * record, e.g. on a full disk, is retried when the disk is back).
 *
 * Lanes split a queue among claimers that run side by side: the writer's
 * threads take calendar_id % parts = part, the outbox's senders one
 * subscriber each.
 */
#ifndef CALSYNC_STORE_QUEUE_H
#define CALSYNC_STORE_QUEUE_H

#include "store/store.h"
#include "util.h"

#include <stdint.h>

/* How long a claim holds when its claimer stops renewing it (DESIGN §2
 * Instances: another instance carries on within 30 seconds). */
#define QUEUE_LEASE_MS 30000

#define QUEUE_CLAIMER_MAX 96
#define QUEUE_KIND_MAX 16
#define QUEUE_UID_MAX 255
#define QUEUE_DELIVERY_ID_MAX 63

enum queue_name { QUEUE_JOBS, QUEUE_OUTBOX };

/* A write job (jobs table). payload is owned by the caller after a
 * claim (free it), may be NULL. */
struct queue_job {
    int64_t id;
    int attempts;
    char kind[QUEUE_KIND_MAX + 1]; /* insert | patch | delete */
    char uid[QUEUE_UID_MAX + 1];
    int64_t calendar_id;
    char *payload;
};

/* A webhook delivery (outbox table). body is owned by the caller after a
 * claim (free it). */
struct queue_delivery {
    int64_t id;
    int attempts;
    char delivery_id[QUEUE_DELIVERY_ID_MAX + 1];
    char *body;
};

/* Sets `out` to this thread's claimer name: "<pid>.<start>/<role>.<tid>"
 * (unique per thread; a restarted process never reuses a name), on
 * PostgreSQL prefixed by the instance's liveness key, "<key>/<pid>...":
 * call it before each claim, since the key changes if the liveness
 * session was lost. */
void queue_claimer(const char *role, char out[QUEUE_CLAIMER_MAX + 1]);

/* Enqueue, inside the caller's transaction when there is one. payload,
 * uid (outbox) may be NULL. 0 or -1 with err set. */
int queue_enqueue_job(struct store_conn *c, const char *kind, const char *uid,
                      int64_t calendar_id, const char *payload, struct cs_err *err);
int queue_enqueue_delivery(struct store_conn *c, const char *delivery_id,
                           const char *subscriber, const char *uid,
                           const char *trigger, const char *body, struct cs_err *err);

/* Claims up to `max` due jobs of lane calendar_id % parts = part, in id
 * order, for `claimer` (its own transaction). *n is how many. When none
 * was claimed, *next_due is the earliest time an item of the lane can be
 * claimed (0: none pending). 0, or -1 with err set (nothing claimed). */
int queue_claim_jobs(struct store_conn *c, const char *claimer, int parts, int part,
                     int max, struct queue_job *out, int *n, int64_t *next_due,
                     struct cs_err *err);

/* The same for the outbox rows of one subscriber. */
int queue_claim_deliveries(struct store_conn *c, const char *claimer,
                           const char *subscriber, int max, struct queue_delivery *out,
                           int *n, int64_t *next_due, struct cs_err *err);

/* Completes item `id`: jobs state 'done' (last_error = note, may be NULL),
 * outbox 'delivered' (last_status = status). Counts the attempt. */
int queue_done(struct store_conn *c, enum queue_name q, int64_t id, int64_t status,
               const char *note, struct cs_err *err);

/* Releases item `id` to be claimed again at `at` (ms), counting the
 * attempt and recording the outcome (jobs: note; outbox: status). */
int queue_retry(struct store_conn *c, enum queue_name q, int64_t id, int64_t at,
                int64_t status, const char *note, struct cs_err *err);

/* Ends a job for good: state 'failed', last_error = why. (The outbox
 * never gives up on a delivery.) */
int queue_fail(struct store_conn *c, int64_t job_id, const char *why, struct cs_err *err);

/* The outbox rows not delivered: pending, and orphaned (their subscriber
 * left the configuration). 0 or -1. */
int queue_outbox_counts(struct store_conn *c, int64_t *pending, int64_t *orphaned,
                        struct cs_err *err);

/* The creation time of the oldest pending outbox row in *created_at, 0
 * when none is pending (for /metrics). 0 or -1. */
int queue_outbox_oldest(struct store_conn *c, int64_t *created_at, struct cs_err *err);

/* The distinct subscribers (urls) with pending rows, at most max, into
 * subs (each owned by the caller: free them). 0 or -1. */
int queue_outbox_subscribers(struct store_conn *c, char **subs, int max, int *n,
                             struct cs_err *err);

/* Marks the pending rows of `subscriber` orphaned: kept, visible, never
 * sent (its secret is gone). *n gets how many. 0 or -1. */
int queue_outbox_orphan(struct store_conn *c, const char *subscriber, int64_t *n,
                        struct cs_err *err);

/* Retention: deletes at most limit finished rows of q made before
 * before_ms (ms): delivered outbox rows by delivered_at; jobs that are done
 * or failed by created_at (a job has no finish time; it cannot be
 * unfinished and old at once for long, and a pending one is never
 * touched). *n gets how many. 0 or -1. */
int queue_prune(struct store_conn *c, enum queue_name q, int64_t before_ms, int limit,
                int64_t *n, struct cs_err *err);

/* Releases every claim of both queues; only for a process that owns the
 * database (see above). Returns the number released, -1 on error. */
int queue_release_all(struct store_conn *c, struct cs_err *err);

/* Several instances (PostgreSQL): first proves this instance alive
 * (takes, or checks and if lost retakes, its liveness key: pg.h
 * pg_owner_check), then releases the pending items of both queues whose
 * claimer's key no live session holds -- a dead instance's claims, at
 * once rather than after their lease. A live instance's claims are never
 * touched. `serve` calls it at start and every QUEUE_RELEASE_EVERY_MS.
 * Returns the number released, 0 on SQLite (released at start only,
 * above), -1 on error. */
#define QUEUE_RELEASE_EVERY_MS 5000
int queue_release_dead(struct store_conn *c, struct cs_err *err);

#endif
