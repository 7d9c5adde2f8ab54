/* google.h -- the Google provider: Google Calendar v3 and OAuth over
 * libcurl (client.c, oauth.c, events.c, channels.c), Google's JSON in the
 * shared shapes (parse.c) and the provider_ops table (ops.c). Only
 * src/provider/ includes this header; the engine sees provider.h.
 *
 * One CURL easy handle per thread (created on first use, released when the
 * thread exits or calls google_thread_release()), so a worker reuses its
 * connections to Google across calls. Every call:
 *   - gets a fresh-enough access token for its credential (cached in the
 *     credentials row, refreshed GOOGLE_REFRESH_AHEAD_MS before expiry);
 *   - retries 429, 403 rateLimitExceeded/userRateLimitExceeded, 5xx and
 *     connection-level failures, waiting Retry-After exactly when given and
 *     otherwise 1 s doubling up to 60 s with jitter in [wait/2, wait];
 *   - gives up when the next wait would pass GOOGLE_RETRY_BUDGET_MS from the
 *     start of the call, or after GOOGLE_MAX_ATTEMPTS exchanges (one
 *     calendar cannot hog a worker, even with Retry-After: 0);
 *   - on a 401 refreshes the token once and retries;
 *   - on invalid_grant from the token endpoint marks the credential and its
 *     calendars revoked (calendar.c: credential_revoke) and returns
 *     GOOGLE_EREVOKED.
 *   - refuses, before any request, a calendar or event id that Google
 *     cannot have issued (GOOGLE_EINVAL), and percent-encodes every id it
 *     puts into a path, '.' included, so no id can change the path;
 * Decoded responses are pushed on the calling thread's JSON state
 * (json_state()); the caller pops them.
 *
 * Never call these inside a database transaction: they block on the
 * network and may write the credentials row themselves.
 */
#ifndef CALSYNC_PROVIDER_GOOGLE_H
#define CALSYNC_PROVIDER_GOOGLE_H

#include "config.h"
#include "provider/provider.h"
#include "store/store.h"
#include "util.h"

#include <lua.h>

#include <stdint.h>

#define GOOGLE_MAX_RESPONSE (16u * 1024 * 1024) /* bytes; larger = error */
#define GOOGLE_CONNECT_TIMEOUT_MS 10000
#define GOOGLE_TOTAL_TIMEOUT_MS 60000           /* one HTTP exchange */
#define GOOGLE_RETRY_BUDGET_MS 120000           /* all retries of one call */
#define GOOGLE_MAX_ATTEMPTS 10                  /* exchanges per call, at most */
#define GOOGLE_BACKOFF_BASE_MS 1000
#define GOOGLE_BACKOFF_MAX_MS 60000
#define GOOGLE_RETRY_AFTER_MAX_MS 3600000       /* larger values are clamped */
#define GOOGLE_REFRESH_AHEAD_MS 60000

enum google_rc {
    GOOGLE_OK = 0,
    GOOGLE_EHTTP,      /* Google answered non-2xx: resp->status, ->reason */
    GOOGLE_ETRANSPORT, /* no usable answer: network, timeout, too large,
                          retry budget spent, or google_cancel() */
    GOOGLE_EREVOKED,   /* refresh token refused; credential now revoked */
    GOOGLE_EBADRESP,   /* a 2xx whose body is not the JSON expected */
    GOOGLE_EINVAL,     /* refused before any request: a calendar or event
                          id that Google cannot have issued (util.h
                          id_valid_calendar/id_valid_event); permanent */
};

/* The outcome of one call. Fill with google_resp_init(), release with
 * google_resp_free(); reusable across calls (each call resets it). */
struct google_resp {
    long status;          /* last HTTP status; 0 when none was received */
    char reason[64];      /* error.errors[0].reason, or OAuth "error" */
    char message[256];    /* error.message, or OAuth "error_description" */
    struct buf body;      /* last response body (owned) */
    int64_t retry_after_ms; /* last Retry-After, -1 when absent */
    int attempts;         /* HTTP exchanges made for this call */
};

void google_resp_init(struct google_resp *r);
void google_resp_free(struct google_resp *r);

/* Who the call is made for: the credential whose token is used, and the
 * calling thread's database connection (for the token cache). */
struct google_auth {
    struct store_conn *db;
    int64_t credential_id;
    int64_t budget_ms; /* retries of one call end within it; 0: GOOGLE_RETRY_BUDGET_MS */
};

/* Process-wide setup: remembers cfg (must outlive every call). Call once
 * before any other function, after curl_global_init(). */
void google_init(const struct config *cfg);
/* Aborts every wait and transfer in progress or to come (shutdown): calls
 * then fail with GOOGLE_ETRANSPORT. google_init() re-arms. Thread-safe. */
void google_cancel(void);
int google_cancelled(void);
/* Frees the calling thread's CURL handle now (the thread-exit destructor
 * does it otherwise). Call before curl_global_cleanup() on the main thread. */
void google_thread_release(void);

/* --------------------------------------------------------------- calls
 * Each returns an enum google_rc, with resp filled and err set to a
 * one-line description on failure. On GOOGLE_OK the calls marked "pushes"
 * leave the decoded JSON object on json_state()'s stack top; nothing is
 * pushed on failure. */

struct google_list_params {
    const char *sync_token;  /* incremental; NULL for a full listing */
    const char *page_token;  /* NULL for the first page */
    int show_deleted;        /* ignored with sync_token (Google sends all) */
    const char *private_prop; /* "key=value": privateExtendedProperty filter
                                 (not with sync_token, which refuses it) */
};

/* events.list, one page, singleEvents=true, maxResults=2500. With a sync
 * token no parameter Google refuses alongside it is sent. Pushes the
 * calendar#events object. A stale token gives GOOGLE_EHTTP with status
 * 410 (reason fullSyncRequired) or 400 (reason invalid). */
int google_events_list(struct google_auth *a, const char *calendar_id,
                       const struct google_list_params *p,
                       struct google_resp *resp, struct cs_err *err);

/* events.instances of a recurring series, one page, showDeleted=true,
 * maxResults=2500. Pushes the calendar#events object. A deleted series
 * gives GOOGLE_EHTTP with status 410 (or 404 when unknown). */
int google_events_instances(struct google_auth *a, const char *calendar_id,
                            const char *series_id, const char *page_token,
                            struct google_resp *resp, struct cs_err *err);

/* events.get. Pushes the event. */
int google_events_get(struct google_auth *a, const char *calendar_id,
                      const char *event_id, struct google_resp *resp,
                      struct cs_err *err);

/* events.insert with the JSON event body (caller-built). Pushes the event
 * Google created (with its id and etag). */
int google_events_insert(struct google_auth *a, const char *calendar_id,
                         const char *body_json, struct google_resp *resp,
                         struct cs_err *err);
/* events.insert with conferenceDataVersion=version (0 or 1: 1 makes Google
 * read conferenceData, e.g. a createRequest). */
int google_events_insert_v(struct google_auth *a, const char *calendar_id,
                           const char *body_json, int version,
                           struct google_resp *resp, struct cs_err *err);

/* events.patch; if_match (an etag, may be NULL) is sent as If-Match, so a
 * concurrent edit gives GOOGLE_EHTTP with status 412. Pushes the event. */
int google_events_patch(struct google_auth *a, const char *calendar_id,
                        const char *event_id, const char *body_json,
                        const char *if_match, struct google_resp *resp,
                        struct cs_err *err);

/* events.delete (If-Match as above). Pushes nothing. 410 means the event
 * was already deleted: GOOGLE_EHTTP with status 410, for the caller to
 * treat as done if it wants. */
int google_events_delete(struct google_auth *a, const char *calendar_id,
                         const char *event_id, const char *if_match,
                         struct google_resp *resp, struct cs_err *err);

/* events.watch: opens channel channel_id (token sent as the channel token,
 * ttl_s as params.ttl) delivering to address. Pushes the api#channel
 * object (id, resourceId, expiration ms as a string). */
int google_events_watch(struct google_auth *a, const char *calendar_id,
                        const char *channel_id, const char *token,
                        const char *address, int64_t ttl_s,
                        struct google_resp *resp, struct cs_err *err);

/* channels.stop. Pushes nothing. */
int google_channels_stop(struct google_auth *a, const char *channel_id,
                         const char *resource_id, struct google_resp *resp,
                         struct cs_err *err);

/* A usable access token for the credential into out (cap bytes),
 * refreshing when it expires within GOOGLE_REFRESH_AHEAD_MS or when force
 * is set. GOOGLE_OK, GOOGLE_EREVOKED (credential revoked, now or before),
 * or another google_rc with err set. */
int google_access_token(struct google_auth *a, int force, char *out,
                        size_t cap, struct google_resp *resp,
                        struct cs_err *err);

/* ----------------------------------------------------- pure pieces (tests) */

/* Parses a Google error body: {"error":{"code","message","errors":[{
 * "reason"}]}} or OAuth's {"error":"invalid_grant","error_description"}.
 * Fills reason/message (empty when absent). Returns 0 when an error
 * object was recognised, -1 otherwise (both left empty). */
int google_parse_error(const char *body, size_t len, char *reason,
                       size_t reason_cap, char *message, size_t message_cap);

/* 1 when a response with this status and reason is retried. */
int google_retryable(long status, const char *reason);

/* Parses a Retry-After value (delta-seconds or IMF-fixdate HTTP-date;
 * now_ms is the wall clock for the latter) into a wait in ms, clamped to
 * [0, GOOGLE_RETRY_AFTER_MAX_MS]. 0 or -1 when unparsable. */
int google_parse_retry_after(const char *v, size_t n, int64_t now_ms,
                             int64_t *wait_ms);

/* Appends s percent-encoded for a URL path segment or query value: only
 * ASCII letters, digits, '-', '_' and '~' are kept, so no value can add a
 * path segment ('/'), be a dot segment ('.' is "%2E"), or start a query
 * or fragment. 0 or -1 on OOM. */
int google_url_escape(struct buf *b, const char *s);

/* --------------------------------------------- between the provider's files */

/* The config google_init() was given. */
const struct config *google_config(void);

/* Clears resp for a new call (keeps its body buffer). */
void google_resp_reset(struct google_resp *r);

/* One HTTP exchange's request. */
struct google_exchange {
    const char *method;   /* GET POST PATCH DELETE */
    const char *url;
    const char *bearer;   /* NULL: no Authorization */
    const char *ctype;    /* body content type, NULL when no body */
    const char *body;
    size_t body_len;
    const char *if_match;
};

/* The exchange plus retries of DESIGN §2 "Google failures". 0 when a final
 * HTTP answer is in r (2xx or a status not retried), -1 with err set when
 * none could be had before deadline (monotonic ms). `what` names the
 * method for metrics and logs. */
int google_exchange_retry(const char *what, const struct google_exchange *e,
                          struct google_resp *r, int64_t deadline,
                          struct cs_err *err);

/* One Calendar call being built (events.c, channels.c). */
struct google_call {
    const char *what;      /* metrics name: events.list ... */
    const char *method;
    const char *invalid;   /* set by the URL builders: which id was refused */
    struct buf url;        /* owned; freed by google_call_url */
    const char *body;      /* JSON, or NULL */
    const char *if_match;
    int push;              /* decode and push the 2xx body */
};

/* Starts c->url with the calendar's collection and `tail`. An id Google
 * cannot have issued (id_valid_calendar) builds nothing and marks the call
 * invalid. -1 on OOM. */
int google_url_start(struct google_call *c, const char *cal, const char *tail);

/* Runs a call whose URL was built into c->url (`bad`: building it ran out
 * of memory) with the credential's token (refreshed once after a 401) and
 * frees the URL. A call whose builder refused an id makes no request:
 * GOOGLE_EINVAL. An enum google_rc. */
int google_call_url(struct google_auth *a, struct google_call *c, int bad,
                    struct google_resp *resp, struct cs_err *err);

/* ------------------------------------------------ parse.c: Google's shapes */

#define GOOGLE_PAGE_TOKEN_MAX PROVIDER_CURSOR_MAX

/* Reads the Google event object at idx of L into ev (strings point into
 * L's values or into ev itself: valid while the object stays on the
 * stack). Rejects wrong types and out-of-bounds sizes: 0, or -1 with err.
 * PROVIDER_EVENT_SKIP (err says why) when its id or recurringEventId is a
 * string Google cannot have issued (util.h id_valid_event): the caller
 * leaves the item out instead of failing the page. */
int google_event_parse(lua_State *L, int idx, struct provider_event *ev,
                       struct cs_err *err);

/* Splits an instance id "<series>_<YYYYMMDD>" or
 * "<series>_<YYYYMMDD>T<HHMMSS>Z": 1 with *series_len and the original
 * start (ms, midnight UTC for a date) set; 0 when id has no such suffix. */
int google_split_instance_id(const char *id, size_t n, size_t *series_len,
                             int64_t *original_start_ms, int *all_day);

/* Checks a calendar#events page at idx (events.list or events.instances;
 * `listing`: exactly one of nextPageToken / nextSyncToken must be set) and
 * fills out (items, n, next_page, next_cursor). Items are not parsed.
 * 0, or -1 with err. */
int google_page_read(lua_State *L, int idx, int listing, struct provider_page *out,
                     struct cs_err *err);

/* The Calendar event JSON calsync writes: id (insert only, may be NULL),
 * summary, start/end (in the calendar's zone), the calsync_booking_uid private property (when
 * uid is set) and attendees (a JSON array, when set). 0 or -1 (memory). */
int google_event_body(const char *id, const char *uid, const char *title,
                      int64_t start_ms, int64_t end_ms,
                      const char *attendees_json, struct buf *out);
/* Adds conferenceData.createRequest for a Google Meet (requestId
 * request_id: the same id again makes no second conference) to the event
 * body in out, as google_event_body made it. 0 or -1 (memory). */
int google_event_body_meet(struct buf *out, const char *request_id);

/* The same from a provider_write, with what it may hold besides:
 * description, location, the zone of start/end (absent: the calendar's
 * own), attendees in the booking's form, and a restore of a deleted event
 * (status confirmed). 0 or -1 (memory). */
int google_event_write(const struct provider_write *w, struct buf *out);

/* provider_ops.encode: a stub or a mirror row as a Google event. */
int google_event_encode(const struct provider_event *ev, enum provider_encode how,
                        struct buf *out);

/* provider_ops.classify: Google's status and reason for a call of kind op. */
int google_classify(enum provider_op op, long status, const char *reason);

/* The class of a finished call: g an enum google_rc, resp its answer. */
int google_rc_class(enum provider_op op, int g, const struct google_resp *resp);

/* The Google provider (ops.c), registered by provider.c. */
extern const struct provider_ops google_provider;

#endif
