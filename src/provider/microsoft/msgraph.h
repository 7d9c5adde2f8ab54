/* msgraph.h -- the Microsoft Graph (Outlook) provider: Graph v1.0 calendar
 * calls and the Microsoft identity platform's OAuth over libcurl
 * (client.c, oauth.c), Graph's JSON in the shared shapes (parse.c) and
 * the provider_ops table (ops.c). Only src/provider/ includes this header;
 * the engine sees provider.h. docs/internals/microsoft.md says why it is
 * built the way it is.
 *
 * The HTTP exchange, its retries and the OAuth refresh are the shared ones
 * (src/provider/phttp.h, poauth.h), run with Graph's struct phttp_client
 * msgraph_http (client.c), with Graph's specifics:
 *   - retried are 429, 503, 504 (and other 5xx); Retry-After may be
 *     fractional ("2.128") and is kept to the ms;
 *   - error bodies name their reason in error.code;
 *   - the token endpoint is <tenant>/oauth2/v2.0/token and Microsoft
 *     rotates refresh tokens: the newest is kept (oauth.c);
 *   - every id that goes into a path is checked (msgraph_id_valid) and
 *     percent-encoded; a next/delta link is followed only when it is under
 *     microsoft.api_base, so the bearer token never goes anywhere else.
 * Decoded responses are pushed on the calling thread's JSON state.
 * Never call these inside a database transaction.
 */
#ifndef CALSYNC_PROVIDER_MSGRAPH_H
#define CALSYNC_PROVIDER_MSGRAPH_H

#include "config.h"
#include "provider/phttp.h"
#include "provider/pjson.h"
#include "provider/poauth.h"
#include "provider/provider.h"
#include "store/store.h"
#include "util.h"

#include <lua.h>
#include <stdint.h>

#define MSGRAPH_RETRY_AFTER_MAX_MS PHTTP_RETRY_AFTER_MAX_MS
#define MSGRAPH_ID_MAX 512          /* Graph ids are ~150 bytes of base64 */
/* calendarView/delta needs a window; Graph keeps it in the delta link.
 * Bookings are made for the coming months; the past year is kept so a
 * late edit of a recent booking is still seen. */
#define MSGRAPH_WINDOW_PAST_S (365LL * 86400)
#define MSGRAPH_WINDOW_AHEAD_S (730LL * 86400)
/* The extended property that carries calsync's booking uid (a named
 * string property in calsync's own property set). */
#define MSGRAPH_TAG_PROP "String {8d3a1c56-4e1b-4c6e-9b1f-6a2c7f0e5d41} Name calsync_booking_uid"

/* The shared client's outcomes under the names this provider's files use. */
#define MSGRAPH_OK PHTTP_OK
#define MSGRAPH_EHTTP PHTTP_EHTTP           /* resp->status, ->reason */
#define MSGRAPH_ETRANSPORT PHTTP_ETRANSPORT
#define MSGRAPH_EREVOKED PHTTP_EREVOKED
#define MSGRAPH_EBADRESP PHTTP_EBADRESP
#define MSGRAPH_EINVAL PHTTP_EINVAL         /* a bad id or link */

#define msgraph_url_escape phttp_url_escape

/* Graph's HTTP client (client.c): names, hooks and state for phttp. */
extern struct phttp_client msgraph_http;

void msgraph_init(const struct config *cfg);
void msgraph_cancel(void);
void msgraph_thread_release(void);
const struct config *msgraph_config(void);

/* Appends the calendar's collection URL: api_base + "/me/calendar" for
 * "primary", else "/me/calendars/<id>". Marks the call invalid for an id
 * Graph cannot have issued. -1 on OOM. */
int msgraph_url_calendar(struct phttp_call *c, const char *calendar);
/* Appends api_base + "/me/events/<id>" (invalid id: marks the call). */
int msgraph_url_event(struct phttp_call *c, const char *id);

/* A usable access token (poauth_access_token with Graph's token endpoint). */
int msgraph_access_token(struct phttp_auth *a, int force, char *out, size_t cap,
                         struct phttp_resp *resp, struct cs_err *err);

/* ----------------------------------------------------- pure pieces (tests) */

/* 1 for an id Graph can have issued: 1..MSGRAPH_ID_MAX bytes of base64
 * (letters, digits, '+', '/', '-', '_', '=') -- never "." or "..". */
int msgraph_id_valid(const char *s, size_t n);
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
/* A delta or instances page for pjson_page_read/pjson_page_top:
 * @odata.nextLink, @odata.deltaLink and the value array (parse.c). */
extern const struct pjson_page_keys msgraph_page_keys;
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

extern const struct provider_ops microsoft_provider;

#endif
