/* provider.h -- the seam between calsync's shared engine and a calendar
 * provider (DESIGN §8a).
 *
 * Everything provider-specific -- the API calls, push subscriptions and the
 * parsing of their notifications, the raw event's shape, occurrence ids,
 * what an error means -- sits behind struct provider_ops. The sync loop,
 * matching, classification, policies, apply, audit, outbox and the API see
 * only this header: the shared event shape (struct provider_event), pages
 * of raw events, and error classes. `credentials.provider` names the
 * implementation a calendar's credential uses (provider_for_credential).
 * Google (src/provider/google/) is the first implementation; see
 * docs/internals/provider.md for what Microsoft Graph and CalDAV need.
 *
 * Raw events and pages are Lua values on the calling thread's JSON state
 * (json_state()): an op that "pushes" leaves one value on the stack top on
 * success and nothing on failure; the caller pops it. A raw event is what
 * a policy sees as change.event; provider_event is what the engine reads
 * from it (through ops->normalise).
 *
 * Threads: every op but push_parse runs on worker/writer threads and may
 * block on the network; never call one inside a database transaction.
 */
#ifndef CALSYNC_PROVIDER_H
#define CALSYNC_PROVIDER_H

#include "config.h"
#include "metrics.h"
#include "http.h"
#include "store/store.h"
#include "util.h"

#include <lua.h>
#include <stdint.h>

#define PROVIDER_NAME_MAX 32
#define PROVIDER_NO_TIME INT64_MIN  /* start/end/original start unknown */
#define PROVIDER_ID_MAX 1024
#define PROVIDER_TITLE_MAX 4096     /* longer titles are cut (UTF-8 safe) */
#define PROVIDER_ETAG_MAX 256
#define PROVIDER_TAG_MAX 256        /* longer booking tags: ignored */
#define PROVIDER_CREATED_MAX 64
#define PROVIDER_CURSOR_MAX 4096    /* page tokens, sync cursors */
#define PROVIDER_PAGE_MAX 100000    /* items on one page, at most */
#define PROVIDER_ATTENDEES_MAX 8192 /* the attendees JSON; attendees past it
                                       are left out */

/* ------------------------------------------------ the shared event shape
 * One event as the engine (and the mirror) keeps it, whatever the
 * provider. String fields are NUL-terminated and owned by whoever filled
 * the struct (normalise: they point into the raw event on the Lua stack or
 * into the struct itself, so it must not be copied by value once filled);
 * NULL when absent. Times are ms since the epoch, PROVIDER_NO_TIME when
 * unknown. */
struct provider_event {
    const char *id;
    const char *etag;            /* the version, for conditional writes */
    const char *status;          /* confirmed | tentative | cancelled */
    int64_t start_ms, end_ms;
    int all_day;                 /* start/end were dates: midnight UTC */
    const char *series_id;       /* the series of an occurrence, or NULL */
    int64_t original_start_ms;   /* an occurrence's slot in its series */
    const char *updated;
    const char *title;
    const char *booking_tag;     /* the calsync_booking_uid the event carries */
    const char *created;         /* creation stamp (a split series copies it) */
    /* 1 for a cancellation that names nothing but its id (Google's bare
     * stub): its series, if any, was inferred from the id, and it may be
     * an occurrence a series change removed rather than a deletion (the
     * sync defers it to series reconciliation). 0 otherwise. */
    int bare;
    /* The attendees' responses, as compact JSON
     * [{"email":"..","response":"accepted|declined|tentative|needsAction"}]
     * in the provider's order (DESIGN §5 change.new.attendees); NULL when
     * the event has none. A change of it alone is kind `response`. */
    const char *attendees;
    /* The event's video conference link (Google: hangoutLink), or NULL. */
    const char *conference_url;
    /* storage for series_id/title/attendees when they are not in the raw
     * value */
    char series_buf_[PROVIDER_ID_MAX + 1];
    char title_buf_[PROVIDER_TITLE_MAX + 1];
    char attendees_buf_[PROVIDER_ATTENDEES_MAX + 1];
};

/* normalise's "leave this item out" answer: an id the provider cannot
 * have issued (it would go back into a URL); err says why. */
#define PROVIDER_EVENT_SKIP 1

/* ------------------------------------------------------- error classes
 * What every op returns: PROVIDER_OK or the class of its failure, decided
 * by the provider (ops->classify) so the engine never reads a status code. */
enum provider_rc {
    PROVIDER_OK = 0,
    PROVIDER_TRANSIENT,  /* try again later: network, rate limit, 5xx, a
                            refused token refresh, retry budget spent */
    PROVIDER_RESYNC,     /* the change cursor expired: list everything */
    PROVIDER_REVOKED,    /* the credential is refused for good; it and its
                            calendars are marked revoked already */
    PROVIDER_PERMANENT,  /* refused for good: no access, bad request, an id
                            the provider cannot have issued */
    PROVIDER_GONE,       /* the event, series or subscription does not exist
                            (any more) */
    PROVIDER_CONFLICT,   /* a conditional write found a newer version */
    PROVIDER_MALFORMED,  /* a success answer the provider's shape rejects */
};
const char *provider_rc_name(int rc);

/* What the provider last answered, for logs and error texts. */
struct provider_status {
    long status;            /* last HTTP status; 0 when none was received */
    char reason[64];        /* the provider's machine-readable reason */
    char message[256];      /* the provider's own words ("Invalid attendee email") */
    int64_t retry_after_ms; /* the wait the provider asked for, -1 if none */
};

/* Which call is being classified (the same status means different things
 * to different calls: 410 on a change listing is an expired cursor, on an
 * occurrence listing a deleted series). */
enum provider_op {
    PROVIDER_OP_LIST = 0,   /* list_changes with a cursor */
    PROVIDER_OP_LIST_FULL,  /* list_changes without one */
    PROVIDER_OP_OCCURRENCES,
    PROVIDER_OP_READ,       /* get */
    PROVIDER_OP_WRITE,      /* insert, patch, delete */
    PROVIDER_OP_SUBSCRIBE,  /* sub_open, sub_renew, sub_stop */
};

/* Who a call is made for: the credential whose token is used and the
 * calling thread's database connection (token cache, revocation). `last`
 * is filled by every op. */
struct provider_ctx {
    struct store_conn *db;
    int64_t credential_id;
    struct provider_status last;
    int64_t budget_ms;      /* how long one call may retry; 0: the provider's
                             * default (an API request checking a link must
                             * not wait minutes) */
};

/* One page of raw events (pushed: the page's own value is on the stack
 * top; items is the absolute index of its array of raw events, 0 when the
 * page has none). Exactly one of next_page / next_cursor is set on a
 * change listing (more pages / the last one, with the cursor to store);
 * on an occurrence listing next_cursor is always NULL. The strings live
 * in the pushed value. */
struct provider_page {
    int items;
    int n;
    const char *next_page;
    const char *next_cursor;
};

/* An event calsync writes (insert/patch). key (insert only) makes the
 * insert idempotent: the same key never creates a second event. */
struct provider_write {
    const char *key;            /* insert: calsync's id for the event */
    const char *booking_tag;    /* insert: the booking uid it carries */
    const char *title;
    int64_t start_ms, end_ms;
    const char *attendees_json; /* a JSON array [{"email","name"?,"optional"?}],
                                 * or NULL: leave the event's attendees alone */
    int restore;                /* patch: un-delete the event (it was deleted
                                 * in the provider; POST .../resolve revert) */
    const char *description;    /* NULL: not sent */
    const char *location;       /* NULL: not sent */
    const char *time_zone;      /* IANA zone of start/end; NULL: the
                                 * calendar's own */
    int conference;             /* insert: 1 asks for a video conference link
                                   (Google: a Meet, keyed on `key`) */
};

/* A push subscription (Google: a channel). */
struct provider_sub_req {
    const char *id;         /* calsync's id for it (unique, random) */
    const char *token;      /* the per-subscription secret pushes carry */
    const char *address;    /* where pushes go: <public_url>/webhooks/<name> */
    int64_t ttl_s;          /* lifetime asked for; the provider may cap it */
};
struct provider_sub {
    char resource_id[256];  /* the provider's id of what is watched */
    int64_t expiration_ms;  /* when it ends unless renewed */
};

/* One message of a push request, parsed. Strings point into the request
 * (valid while it is); NULL when absent. */
struct provider_push {
    const char *subscription; /* which subscription it claims to be for */
    const char *token;        /* the secret it carries, checked by intake */
    /* what happened, as a label ([A-Za-z0-9_] kept): "sync" is the
     * subscription's first message (nothing changed, nothing to do);
     * anything else asks for a sync of the calendar */
    const char *state;
    const char *sequence;     /* message number, when the provider counts */
    const char *resource;     /* the watched resource's id */
    /* 1: the provider asks for the subscription to be renewed now (Graph's
     * reauthorizationRequired, subscriptionRemoved): once the token
     * checks, the calendar's channel is renewed (or reopened) at once */
    int renew;
};

/* A push request: Google sends one message per request, Graph batches
 * several (for different subscriptions even) and validates a new
 * subscription's address with a handshake. */
#define PROVIDER_PUSH_MAX 16
struct provider_push_batch {
    struct provider_push msg[PROVIDER_PUSH_MAX];
    int n;
    /* set: the request is a handshake, answered 200 text/plain with
     * exactly this text, and nothing else is done */
    const char *handshake;
    /* set: the request was a batch (Graph): answered 202 whatever each
     * message's outcome (a bad token is counted, not refused) unless one
     * could not be journalled (503) */
    int batch;
};

/* Stub or full event for provider_ops.encode. */
enum provider_encode {
    PROVIDER_ENC_STUB = 0,  /* a deletion: id, status and (for an occurrence)
                               series and original start */
    PROVIDER_ENC_EVENT,     /* a mirror row as a full raw event */
};

struct provider_ops {
    const char *name;  /* credentials.provider; also the push route
                          /webhooks/<name> */

    /* The provider's own /metrics families (its calls, retries, token
     * refreshes), declared at start like metrics.c's so every scrape
     * shows them with HELP and TYPE; NULL/0 for none. */
    const struct metrics_family *metrics;
    int n_metrics;

    /* A sentence saying why no calendar of this provider can sync with
     * the configuration cfg (its client is not configured), or NULL when
     * it can. Logged at start and listed in /healthz "warnings". May be
     * NULL. */
    const char *(*unconfigured)(const struct config *cfg);

    /* Process: init once before any call (cfg outlives every call);
     * cancel aborts waits and transfers in progress or to come
     * (shutdown), init re-arms; thread_release frees the calling thread's
     * connections. */
    void (*init)(const struct config *cfg);
    void (*cancel)(void);
    void (*thread_release)(void);

    /* Changes of the calendar since cursor (NULL: a full listing, every
     * event, deletions included), one page; page is the previous page's
     * next_page (NULL for the first). Pushes the page. An expired cursor
     * is PROVIDER_RESYNC: the caller drops it and lists in full. */
    int (*list_changes)(struct provider_ctx *px, const char *calendar,
                        const char *cursor, const char *page,
                        struct provider_page *out, struct cs_err *err);
    /* The occurrences of series, deleted ones included, one page. Pushes
     * the page. A deleted or unknown series is PROVIDER_GONE. */
    int (*occurrences)(struct provider_ctx *px, const char *calendar,
                       const char *series, const char *page,
                       struct provider_page *out, struct cs_err *err);
    /* One event. Pushes the raw event. */
    int (*get)(struct provider_ctx *px, const char *calendar, const char *id,
               struct cs_err *err);
    /* Creates w, idempotently on w->key: a repeat (a retry after a lost
     * answer, a job run again after a crash) answers the event the first
     * one created. Pushes the raw event. */
    int (*insert)(struct provider_ctx *px, const char *calendar,
                  const struct provider_write *w, struct cs_err *err);
    /* Changes title, start and end of event id when its version is still
     * if_match (NULL: unconditional); PROVIDER_CONFLICT otherwise. Pushes
     * the raw event. */
    int (*patch)(struct provider_ctx *px, const char *calendar, const char *id,
                 const struct provider_write *w, const char *if_match,
                 struct cs_err *err);
    /* Deletes event id (if_match as for patch). PROVIDER_GONE when it was
     * gone already. Pushes nothing. */
    int (*remove)(struct provider_ctx *px, const char *calendar, const char *id,
                  const char *if_match, struct cs_err *err);

    /* Push subscriptions. sub_open fills out. sub_renew extends sub in
     * place (out: its new expiration); NULL when the provider cannot (a
     * Google channel): the engine then opens a new subscription and stops
     * the old one. sub_stop: PROVIDER_GONE when the provider no longer
     * knows it. */
    int (*sub_open)(struct provider_ctx *px, const char *calendar,
                    const struct provider_sub_req *req, struct provider_sub *out,
                    struct cs_err *err);
    int (*sub_renew)(struct provider_ctx *px, const char *sub_id,
                     struct provider_sub *sub, struct cs_err *err);
    int (*sub_stop)(struct provider_ctx *px, const char *sub_id,
                    const struct provider_sub *sub, struct cs_err *err);
    /* Reads a push request (headers, body) into out (zeroed by the
     * caller); runs on the HTTP thread and touches nothing else. 0, or -1
     * with err set when the request is not one of the provider's pushes
     * (answered 400). Each message is checked and journalled on its own
     * (intake.c); the request is answered 503 when any could not be. */
    int (*push_parse)(struct http_req *req, struct provider_push_batch *out,
                      struct cs_err *err);

    /* The raw event at idx of L in the shared shape (pure). Checks types
     * and bounds: 0, PROVIDER_EVENT_SKIP, or -1 with err set (a malformed
     * item: ev->id is then its id when it had a usable one, else NULL).
     * The sync skips a listed item either way (sync.c page_check). */
    int (*normalise)(lua_State *L, int idx, struct provider_event *ev,
                     struct cs_err *err);
    /* The provider's raw shape of ev, as JSON into out (replaced): what a
     * policy sees as change.event when the engine, not the provider, made
     * the change (a deletion found by a sweep; a re-linked occurrence).
     * 0 or -1 (memory). */
    int (*encode)(const struct provider_event *ev, enum provider_encode how,
                  struct buf *out);
    /* The class of an answer with this status and reason to a call of
     * kind op (pure). */
    int (*classify)(enum provider_op op, long status, const char *reason);
};

/* ------------------------------------------------------------- registry */

/* The provider called name, or NULL. */
const struct provider_ops *provider_find(const char *name);

/* The i-th registered provider (0-based), NULL past the last. */
const struct provider_ops *provider_at(int i);

/* Declares every registered provider's metric families (metrics_declare).
 * Call once at start, before the HTTP server. 0, or -1 when the metrics
 * table of declared families is full. */
int provider_metrics_declare(void);

/* Adds a provider (tests, future providers). Call before any thread
 * starts; not thread-safe. 0, or -1 when the table is full or the name
 * is taken. */
int provider_register(const struct provider_ops *ops);

/* init/cancel on every registered provider. */
void provider_init_all(const struct config *cfg);
void provider_cancel_all(void);
void provider_thread_release_all(void);

/* The provider of a credential (credentials.provider). 0; 1 with err set
 * when the credential is gone or names no registered provider (a
 * permanent error of the calendars using it); -1 with err set when the
 * database failed. */
int provider_for_credential(struct store_conn *c, int64_t credential_id,
                            const struct provider_ops **out, struct cs_err *err);

/* The provider whose push route (/webhooks/<name>) is path, or NULL. */
const struct provider_ops *provider_for_route(const char *path);

/* Priority of this thread's provider calls against the request budgets
 * (issue 19): push-driven syncs and the app's writes are HIGH, polls, full
 * resyncs and channel renewals LOW. Thread-local, default LOW; each job
 * sets it when it starts because worker threads are reused. */
enum provider_prio { PROVIDER_PRIO_LOW = 0, PROVIDER_PRIO_HIGH = 1 };
void provider_set_priority(enum provider_prio p);
enum provider_prio provider_priority(void);

#endif
