/* status.h -- the operators' status page at GET / (issue 17 item 8).
 *
 * One server-rendered HTML page, no script: calendars with state, reason
 * and last sync; live channels and their expiry; recent policy decisions
 * with policy versions; flagged bookings waiting for a human; the outbox
 * backlog; policies and their load errors. The data comes from the same
 * store functions that render the API's JSON (decoded, then written as
 * HTML), so the page and the API cannot disagree; every value is
 * HTML-escaped on output (titles, reasons and ids are hostile).
 *
 * Access (docs/operations.md, "Status page"): without api_token the page
 * is open like the API. With one, a request needs either
 * `Authorization: Bearer <api_token>` (curl, scripts) or the cookie set by
 * the page's login form (POST /login with the token): calsync_status, an
 * HMAC-SHA256 of a fixed label keyed with the token, HttpOnly,
 * SameSite=Strict, Path=/. The cookie is only accepted by GET / -- never
 * by /v1 -- so a browser session can look but not change anything; a new
 * api_token invalidates every cookie.
 */
#ifndef CALSYNC_STATUS_H
#define CALSYNC_STATUS_H

#include "config.h"
#include "http.h"

/* Derives the cookie from cfg->api_token (none without a token). cfg must
 * outlive the server. 0, or -1 on a libcrypto failure. */
int status_init(const struct config *cfg);

/* GET /: the page, or 401 with the login form. */
void status_page(struct http_req *req, struct http_resp *resp);

/* POST /login: form field `token`; the right one → 303 to / with the
 * cookie, a wrong one → 401 with the form again. */
void status_login(struct http_req *req, struct http_resp *resp);

/* HTML-escapes s (n bytes) into out: & < > " ' become entities, other
 * control characters (except tab and newline) are dropped. Pure; exposed
 * for unit tests. 0 or -1 (memory). */
int status_escape(struct buf *out, const char *s, size_t n);

#endif
