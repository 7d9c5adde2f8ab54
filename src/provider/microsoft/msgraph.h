/* msgraph.h -- the Microsoft Graph (Outlook) provider: Graph v1.0 calendar
 * calls and the Microsoft identity platform's OAuth over libcurl
 * (client.c, oauth.c), Graph's JSON in the shared shapes (parse.c) and
 * the provider_ops table (ops.c). Only src/provider/ includes this header;
 * the engine sees provider.h. docs/internals/microsoft.md says why it is
 * built the way it is.
 *
 * The client follows the Google provider's rules (DESIGN §2, §8), with
 * Graph's specifics:
 *   - one CURL easy handle per thread, reused across calls;
 *   - retries 429, 503, 504 (and other 5xx) and connection failures,
 *     waiting Retry-After exactly when given (Graph sends fractional
 *     seconds, "2.128"), else 1 s doubling up to 60 s with jitter, within
 *     MSGRAPH_RETRY_BUDGET_MS and MSGRAPH_MAX_ATTEMPTS exchanges;
 *   - a 401 refreshes the token once and retries; invalid_grant from the
 *     token endpoint revokes the credential and its calendars;
 *   - every id that goes into a path is checked (msgraph_id_valid) and
 *     percent-encoded; a next/delta link is followed only when it is under
 *     microsoft.api_base, so the bearer token never goes anywhere else.
 * Decoded responses are pushed on the calling thread's JSON state.
 * Never call these inside a database transaction.
 */
#ifndef CALSYNC_PROVIDER_MSGRAPH_H
#define CALSYNC_PROVIDER_MSGRAPH_H

#include "config.h"
#include "provider/provider.h"
#include "store/store.h"
#include "util.h"

#include <lua.h>
#include <stdint.h>

#define MSGRAPH_MAX_RESPONSE (16u * 1024 * 1024)
#define MSGRAPH_CONNECT_TIMEOUT_MS 10000
#define MSGRAPH_TOTAL_TIMEOUT_MS 60000
#define MSGRAPH_RETRY_BUDGET_MS 120000
#define MSGRAPH_MAX_ATTEMPTS 10
#define MSGRAPH_BACKOFF_BASE_MS 1000
#define MSGRAPH_BACKOFF_MAX_MS 60000
#define MSGRAPH_RETRY_AFTER_MAX_MS 3600000
#define MSGRAPH_REFRESH_AHEAD_MS 60000
#define MSGRAPH_ID_MAX 512          /* Graph ids are ~150 bytes of base64 */
/* calendarView/delta needs a window; Graph keeps it in the delta link.
 * Bookings are made for the coming months; the past year is kept so a
 * late edit of a recent booking is still seen. */
#define MSGRAPH_WINDOW_PAST_S (365LL * 86400)
#define MSGRAPH_WINDOW_AHEAD_S (730LL * 86400)
/* The extended property that carries calsync's booking uid (a named
 * string property in calsync's own property set). */
#define MSGRAPH_TAG_PROP "String {8d3a1c56-4e1b-4c6e-9b1f-6a2c7f0e5d41} Name calsync_booking_uid"

enum msgraph_rc {
    MSGRAPH_OK = 0,
    MSGRAPH_EHTTP,      /* Graph answered non-2xx: resp->status, ->reason */
    MSGRAPH_ETRANSPORT, /* no usable answer (network, budget, cancel) */
    MSGRAPH_EREVOKED,   /* refresh token refused; credential now revoked */
    MSGRAPH_EBADRESP,   /* a 2xx whose body is not the JSON expected */
    MSGRAPH_EINVAL,     /* refused before any request: a bad id or link */
};

/* One call's outcome. msgraph_resp_init() / msgraph_resp_free(). */
struct msgraph_resp {
    long status;
    char reason[64];      /* error.code, or OAuth "error" */
    char message[256];
    struct buf body;      /* owned */
    int64_t retry_after_ms;
    int attempts;
};

void msgraph_resp_init(struct msgraph_resp *r);
void msgraph_resp_free(struct msgraph_resp *r);
void msgraph_resp_reset(struct msgraph_resp *r);

struct msgraph_auth {
    struct store_conn *db;
    int64_t credential_id;
};

void msgraph_init(const struct config *cfg);
void msgraph_cancel(void);
int msgraph_cancelled(void);
void msgraph_thread_release(void);
const struct config *msgraph_config(void);

/* One HTTP exchange's request. */
struct msgraph_exchange {
    const char *method;
    const char *url;
    const char *bearer;
    const char *ctype;
    const char *body;
    size_t body_len;
    const char *if_match;
    const char *prefer;   /* Prefer header value, or NULL */
};

int msgraph_exchange_retry(const char *what, const struct msgraph_exchange *e,
                           struct msgraph_resp *r, int64_t deadline,
                           struct cs_err *err);

/* One Graph call. url is owned and freed by msgraph_call. */
struct msgraph_call {
    const char *what;      /* metrics/log name: calendarView.delta ... */
    const char *method;
    const char *invalid;   /* set by a builder: what was refused */
    struct buf url;
    const char *body;
    const char *if_match;
    const char *prefer;
    int push;              /* decode and push the 2xx body */
};

/* Appends the calendar's collection URL: api_base + "/me/calendar" for
 * "primary", else "/me/calendars/<id>". Marks the call invalid for an id
 * Graph cannot have issued. -1 on OOM. */
int msgraph_url_calendar(struct msgraph_call *c, const char *calendar);
/* Appends api_base + "/me/events/<id>" (invalid id: marks the call). */
int msgraph_url_event(struct msgraph_call *c, const char *id);
/* Runs the call with the credential's token (one refresh after a 401). */
int msgraph_call_run(struct msgraph_auth *a, struct msgraph_call *c, int bad,
                     struct msgraph_resp *resp, struct cs_err *err);

int msgraph_access_token(struct msgraph_auth *a, int force, char *out, size_t cap,
                         struct msgraph_resp *resp, struct cs_err *err);

/* ----------------------------------------------------- pure pieces (tests) */

/* 1 for an id Graph can have issued: 1..MSGRAPH_ID_MAX bytes of base64
 * (letters, digits, '+', '/', '-', '_', '=') -- never "." or "..". */
int msgraph_id_valid(const char *s, size_t n);
int msgraph_url_escape(struct buf *b, const char *s);
int msgraph_retryable(long status, const char *reason);
/* Retry-After: delta-seconds, fractional allowed ("2.128"), or an
 * HTTP-date; into ms clamped to [0, MSGRAPH_RETRY_AFTER_MAX_MS]. 0 / -1. */
int msgraph_parse_retry_after(const char *v, size_t n, int64_t now_ms, int64_t *wait_ms);
/* {"error":{"code","message"}} or OAuth {"error","error_description"}. */
int msgraph_parse_error(const char *body, size_t len, char *reason, size_t reason_cap,
                        char *message, size_t message_cap);
/* Graph's {"dateTime":"2026-01-02T09:00:00.0000000","timeZone":"UTC"}:
 * calsync asks for UTC (Prefer: outlook.timezone="UTC"), so a zone other
 * than UTC (or an offset) is refused rather than guessed. 0 / -1. */
int msgraph_parse_datetime(const char *s, size_t n, int64_t *ms);

/* provider_ops.normalise: a Graph event (or an @removed stub). */
int msgraph_event_parse(lua_State *L, int idx, struct provider_event *ev,
                        struct cs_err *err);
/* A delta or instances page at idx: items in "value"; listing: exactly one
 * of @odata.nextLink / @odata.deltaLink. 0 or -1. */
int msgraph_page_read(lua_State *L, int idx, int listing, struct provider_page *out,
                      struct cs_err *err);
/* The event JSON calsync writes (subject, UTC start/end; on insert the
 * transactionId, the tag property and attendees). 0 or -1 (memory). */
int msgraph_event_body(const char *txid, const char *uid, const char *title,
                       int64_t start_ms, int64_t end_ms, const char *attendees_json,
                       struct buf *out);
int msgraph_event_encode(const struct provider_event *ev, enum provider_encode how,
                         struct buf *out);
int msgraph_classify(enum provider_op op, long status, const char *reason);
int msgraph_rc_class(enum provider_op op, int g, const struct msgraph_resp *resp);

extern const struct provider_ops microsoft_provider;

#endif
