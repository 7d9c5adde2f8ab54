/* client.c -- the Google provider's HTTP client: what is Google's about
 * the shared exchange (phttp.h) -- which answers are retried, where an
 * error body names its reason, whole-second Retry-After, the request
 * budgets -- and the calendar URLs every Calendar method starts with.
 * See google.h and docs/internals/google.md.
 */
#include "provider/google/google.h"
#include "provider/google/budget.h"

#include "json.h"

#include <lua.h>
#include <string.h>

/* error.message, error.errors[0].reason, else error.status
 * ("UNAUTHENTICATED": some errors carry only that) */
static void error_detail(lua_State *L, int e, char *reason, size_t reason_cap,
                         char *message, size_t message_cap)
{
    phttp_copy_field(L, e, "message", message, message_cap);
    lua_getfield(L, e, "errors");
    if (lua_istable(L, -1)) {
        lua_rawgeti(L, -1, 1);
        if (lua_istable(L, -1))
            phttp_copy_field(L, lua_gettop(L), "reason", reason, reason_cap);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (reason_cap && !reason[0])
        phttp_copy_field(L, e, "status", reason, reason_cap);
}

struct phttp_client google_http = {
    .name = "google",
    .display = "Google",
    .retry_after_fraction = 0,
    .retryable = google_retryable,
    .error_detail = error_detail,
    .budget = google_budget_acquire,
    .access_token = google_access_token,
};

void google_init(const struct config *cfg)
{
    phttp_init(&google_http, cfg);
    google_budget_configure(cfg->google.requests_per_minute,
                            cfg->google.project_requests_per_minute);
}

const struct config *google_config(void)
{
    return google_http.cfg;
}

void google_cancel(void)
{
    phttp_cancel(&google_http);
}

int google_cancelled(void)
{
    return phttp_cancelled(&google_http);
}

void google_thread_release(void)
{
    phttp_thread_release();
}

int google_retryable(long status, const char *reason)
{
    if (status == 429 || (status >= 500 && status <= 599))
        return 1;
    if (status == 403 && reason &&
        (strcmp(reason, "rateLimitExceeded") == 0 ||
         strcmp(reason, "userRateLimitExceeded") == 0))
        return 1;
    return 0;
}

int google_parse_retry_after(const char *v, size_t n, int64_t now_ms,
                             int64_t *wait_ms)
{
    return phttp_parse_retry_after(v, n, now_ms, google_http.retry_after_fraction, wait_ms);
}

int google_parse_error(const char *body, size_t len, char *reason,
                       size_t reason_cap, char *message, size_t message_cap)
{
    return phttp_parse_error(&google_http, body, len, reason, reason_cap, message,
                             message_cap);
}

/* Starts c->url with the calendar's collection and `tail`. An id Google
 * cannot have issued (id_valid_calendar) builds nothing and marks the call
 * invalid: phttp_call_run then refuses it before any request. -1 on OOM. */
int google_url_start(struct phttp_call *c, const char *cal, const char *tail)
{
    if (!cal || !id_valid_calendar(cal, strlen(cal))) {
        c->invalid = "calendar id";
        return 0;
    }
    struct buf *u = &c->url;
    return buf_puts(u, google_http.cfg->google.api_base) || buf_puts(u, "/calendars/") ||
           phttp_url_escape(u, cal) || buf_puts(u, tail);
}

int google_call_url(struct google_auth *a, struct phttp_call *c, int bad,
                    struct google_resp *resp, struct cs_err *err)
{
    return phttp_call_run(&google_http, a, c, bad, resp, err);
}
