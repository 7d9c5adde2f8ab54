/* client.c -- the Microsoft Graph provider's HTTP client: what is Graph's
 * about the shared exchange (phttp.h) -- which answers are retried, the
 * error shape, fractional Retry-After -- and Graph's URLs and ids. See
 * msgraph.h and docs/internals/microsoft.md.
 */
#include "provider/microsoft/msgraph.h"

#include <lua.h>
#include <string.h>

/* Graph: {"error":{"code":"SyncStateNotFound","message":...}} */
static void error_detail(lua_State *L, int e, char *reason, size_t reason_cap,
                         char *message, size_t message_cap)
{
    phttp_copy_field(L, e, "code", reason, reason_cap);
    phttp_copy_field(L, e, "message", message, message_cap);
}

struct phttp_client msgraph_http = {
    .name = "microsoft",
    .display = "Graph",
    .user_agent = "calsync",
    .retry_after_fraction = 1, /* Graph sends "2.128" */
    .retryable = msgraph_retryable,
    .error_detail = error_detail,
    .budget = NULL, /* Graph throttles with 429 + Retry-After, retried */
    .access_token = msgraph_access_token,
};

void msgraph_init(const struct config *cfg)
{
    phttp_init(&msgraph_http, cfg);
}

const struct config *msgraph_config(void)
{
    return msgraph_http.cfg;
}

void msgraph_cancel(void)
{
    phttp_cancel(&msgraph_http);
}

void msgraph_thread_release(void)
{
    phttp_thread_release();
}

int msgraph_retryable(long status, const char *reason)
{
    (void)reason;
    /* Graph throttles with 429 (and 503/504 under load), always with
     * Retry-After; other 5xx are passing faults too */
    return status == 429 || (status >= 500 && status <= 599);
}

int msgraph_parse_retry_after(const char *v, size_t n, int64_t now_ms,
                              int64_t *wait_ms)
{
    return phttp_parse_retry_after(v, n, now_ms, msgraph_http.retry_after_fraction,
                                   wait_ms);
}

int msgraph_parse_error(const char *body, size_t len, char *reason,
                        size_t reason_cap, char *message, size_t message_cap)
{
    return phttp_parse_error(&msgraph_http, body, len, reason, reason_cap, message,
                             message_cap);
}

int msgraph_id_valid(const char *s, size_t n)
{
    if (!s || n == 0 || n > MSGRAPH_ID_MAX || strlen(s) != n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                 (c >= '0' && c <= '9') || c == '+' || c == '/' || c == '-' ||
                 c == '_' || c == '=';
        if (!ok)
            return 0;
    }
    return 1;
}

int msgraph_url_calendar(struct phttp_call *c, const char *cal)
{
    struct buf *u = &c->url;
    const char *base = msgraph_http.cfg->microsoft.api_base;
    if (cal && strcmp(cal, "primary") == 0)
        return buf_puts(u, base) || buf_puts(u, "/me/calendar");
    if (!cal || !msgraph_id_valid(cal, strlen(cal))) {
        c->invalid = "calendar id";
        return 0;
    }
    return buf_puts(u, base) || buf_puts(u, "/me/calendars/") || phttp_url_escape(u, cal);
}

int msgraph_url_event(struct phttp_call *c, const char *id)
{
    struct buf *u = &c->url;
    if (!id || !msgraph_id_valid(id, strlen(id))) {
        c->invalid = "event id";
        return 0;
    }
    return buf_puts(u, msgraph_http.cfg->microsoft.api_base) || buf_puts(u, "/me/events/") ||
           phttp_url_escape(u, id);
}
