/* google.h -- the Google provider: Google Calendar v3 and OAuth over
 * libcurl (client.c, oauth.c, events.c, channels.c), Google's JSON in the
 * shared shapes (parse.c) and the provider_ops table (ops.c). Only
 * src/provider/ includes this header; the engine sees provider.h.
 *
 * The HTTP exchange, its retries and the OAuth refresh are the shared ones
 * (src/provider/phttp.h, poauth.h), run with Google's struct phttp_client
 * google_http (client.c): retried are 429, 403
 * rateLimitExceeded/userRateLimitExceeded and 5xx (google_retryable);
 * Retry-After is whole seconds or an HTTP-date; every authenticated request
 * first takes a token from the request budgets (budget.h); error bodies
 * name their reason in error.errors[0].reason. On top of it every call
 *   - refuses, before any request, a calendar or event id that Google
 *     cannot have issued (GOOGLE_EINVAL), and percent-encodes every id it
 *     puts into a path, '.' included, so no id can change the path;
 *   - on invalid_grant from the token endpoint has the credential and its
 *     calendars marked revoked (GOOGLE_EREVOKED).
 * Decoded responses are pushed on the calling thread's JSON state
 * (json_state()); the caller pops them.
 *
 * Never call these inside a database transaction: they block on the
 * network and may write the credentials row themselves.
 */
#ifndef CALSYNC_PROVIDER_GOOGLE_H
#define CALSYNC_PROVIDER_GOOGLE_H

#include "config.h"
#include "provider/phttp.h"
#include "provider/pjson.h"
#include "provider/poauth.h"
#include "provider/provider.h"
#include "store/store.h"
#include "util.h"

#include <lua.h>

#include <stdint.h>

/* The shared client's limits and shapes under the names this provider's
 * files and tests/unit/test_google.c use. */
#define GOOGLE_MAX_RESPONSE PHTTP_MAX_RESPONSE
#define GOOGLE_RETRY_BUDGET_MS PHTTP_RETRY_BUDGET_MS
#define GOOGLE_BACKOFF_BASE_MS PHTTP_BACKOFF_BASE_MS
#define GOOGLE_BACKOFF_MAX_MS PHTTP_BACKOFF_MAX_MS
#define GOOGLE_RETRY_AFTER_MAX_MS PHTTP_RETRY_AFTER_MAX_MS

#define GOOGLE_OK PHTTP_OK
#define GOOGLE_EHTTP PHTTP_EHTTP           /* resp->status, ->reason */
#define GOOGLE_ETRANSPORT PHTTP_ETRANSPORT
#define GOOGLE_EREVOKED PHTTP_EREVOKED
#define GOOGLE_EBADRESP PHTTP_EBADRESP
/* a calendar or event id that Google cannot have issued (util.h
 * id_valid_calendar/id_valid_event), or no client configured */
#define GOOGLE_EINVAL PHTTP_EINVAL

#define google_resp phttp_resp       /* reason: error.errors[0].reason */
#define google_resp_init phttp_resp_init
#define google_resp_free phttp_resp_free
#define google_auth phttp_auth
#define google_url_escape phttp_url_escape

/* Google's HTTP client (client.c): names, hooks and state for phttp. */
extern struct phttp_client google_http;

/* Process-wide setup: remembers cfg (must outlive every call) and sets the
 * request budgets. Call once before any other function, after
 * curl_global_init(). */
void google_init(const struct config *cfg);
/* Aborts every wait and transfer in progress or to come (shutdown): calls
 * then fail with GOOGLE_ETRANSPORT. google_init() re-arms. Thread-safe. */
void google_cancel(void);
int google_cancelled(void);
/* Frees the calling thread's CURL handle (phttp_thread_release). */
void google_thread_release(void);

/* --------------------------------------------------------------- calls
 * Each returns an enum phttp_rc (GOOGLE_*), with resp filled and err set to a
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
 * refreshing when it expires within POAUTH_REFRESH_AHEAD_MS or when force
 * is set. GOOGLE_OK, GOOGLE_EREVOKED (credential revoked, now or before),
 * or another phttp_rc with err set (poauth_access_token). */
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

/* Parses a Retry-After value (whole delta-seconds or an IMF-fixdate
 * HTTP-date) as phttp_parse_retry_after does. 0 or -1 when unparsable. */
int google_parse_retry_after(const char *v, size_t n, int64_t now_ms,
                             int64_t *wait_ms);

/* --------------------------------------------- between the provider's files */

/* The config google_init() was given. */
const struct config *google_config(void);

/* Starts c->url with the calendar's collection and `tail`. An id Google
 * cannot have issued (id_valid_calendar) builds nothing and marks the call
 * invalid. -1 on OOM. */
int google_url_start(struct phttp_call *c, const char *cal, const char *tail);

/* Runs a call whose URL was built into c->url (`bad`: building it ran out
 * of memory) through phttp_call_run with google_http. An enum phttp_rc. */
int google_call_url(struct google_auth *a, struct phttp_call *c, int bad,
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

/* A calendar#events page (events.list, events.instances) for
 * pjson_page_read/pjson_page_top: nextPageToken, nextSyncToken (exactly
 * one of them on a listing) and the items array (parse.c). */
extern const struct pjson_page_keys google_page_keys;

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

/* The Google provider (ops.c), registered by provider.c. */
extern const struct provider_ops google_provider;

#endif
