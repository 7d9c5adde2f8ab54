/* google.h -- Google Calendar v3 and OAuth over libcurl.
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
#ifndef CALSYNC_GOOGLE_H
#define CALSYNC_GOOGLE_H

#include "config.h"
#include "store/store.h"
#include "util.h"

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

#endif
