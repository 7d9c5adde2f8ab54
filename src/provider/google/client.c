/* client.c -- the Google provider's HTTP client: one exchange, retries,
 * and the authenticated call every Calendar method goes through.
 *
 * Main objects: a per-thread CURL easy handle (connection reuse), struct
 * google_resp (one call's outcome), the retry loop google_exchange_retry()
 * (also used by oauth.c for the token endpoint) and google_call_url(), which
 * adds the access token and the one refresh after a 401. See google.h for
 * the rules and docs/internals/google.md for why they are what they are.
 */
#include "provider/google/google.h"
#include "provider/google/budget.h"

#include "calendar.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "version.h"

#include <curl/curl.h>
#include <lua.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static const struct config *g_cfg; /* google_config() */
static atomic_int g_cancel;
static pthread_key_t g_key;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

/* ------------------------------------------------------------ the handle */

static void handle_free(void *p)
{
    if (p)
        curl_easy_cleanup((CURL *)p);
}

static void key_init(void)
{
    pthread_key_create(&g_key, handle_free);
}

static CURL *thread_handle(void)
{
    pthread_once(&g_once, key_init);
    CURL *h = pthread_getspecific(g_key);
    if (!h) {
        h = curl_easy_init();
        if (h)
            pthread_setspecific(g_key, h);
    }
    return h;
}

void google_thread_release(void)
{
    pthread_once(&g_once, key_init);
    CURL *h = pthread_getspecific(g_key);
    if (h) {
        pthread_setspecific(g_key, NULL);
        curl_easy_cleanup(h);
    }
}

void google_init(const struct config *cfg)
{
    g_cfg = cfg;
    atomic_store(&g_cancel, 0);
    google_budget_configure(cfg->google.requests_per_minute,
                            cfg->google.project_requests_per_minute);
}

const struct config *google_config(void)
{
    return g_cfg;
}

void google_cancel(void)
{
    atomic_store(&g_cancel, 1);
}

int google_cancelled(void)
{
    return atomic_load(&g_cancel);
}

void google_resp_init(struct google_resp *r)
{
    memset(r, 0, sizeof *r);
    buf_init(&r->body);
    r->retry_after_ms = -1;
}

void google_resp_free(struct google_resp *r)
{
    buf_free(&r->body);
}

void google_resp_reset(struct google_resp *r)
{
    r->status = 0;
    r->reason[0] = r->message[0] = '\0';
    buf_reset(&r->body);
    r->retry_after_ms = -1;
}

/* ----------------------------------------------------------- pure pieces */

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

static int month_index(const char *m)
{
    static const char names[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    for (int i = 0; i < 12; i++)
        if (strncmp(names + 3 * i, m, 3) == 0)
            return i;
    return -1;
}

static int two(const char *s, int *out)
{
    if (s[0] < '0' || s[0] > '9' || s[1] < '0' || s[1] > '9')
        return -1;
    *out = (s[0] - '0') * 10 + (s[1] - '0');
    return 0;
}

int google_parse_retry_after(const char *v, size_t n, int64_t now_ms,
                             int64_t *wait_ms)
{
    while (n && (*v == ' ' || *v == '\t'))
        v++, n--;
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t' || v[n - 1] == '\r' ||
                 v[n - 1] == '\n'))
        n--;
    if (n == 0)
        return -1;
    if (v[0] >= '0' && v[0] <= '9') {
        int64_t s = 0;
        for (size_t i = 0; i < n; i++) {
            if (v[i] < '0' || v[i] > '9')
                return -1;
            if (s < GOOGLE_RETRY_AFTER_MAX_MS / 1000 + 1)
                s = s * 10 + (v[i] - '0');
        }
        int64_t ms = s * 1000;
        *wait_ms = ms > GOOGLE_RETRY_AFTER_MAX_MS ? GOOGLE_RETRY_AFTER_MAX_MS : ms;
        return 0;
    }
    /* IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT" (exactly 29 bytes) */
    if (n != 29 || v[3] != ',' || v[4] != ' ' || v[7] != ' ' || v[11] != ' ' ||
        v[16] != ' ' || v[19] != ':' || v[22] != ':' || v[25] != ' ' ||
        memcmp(v + 26, "GMT", 3) != 0)
        return -1;
    int day, mon, y1, y2, hh, mm, ss;
    char mname[4] = {v[8], v[9], v[10], 0};
    if (two(v + 5, &day) || (mon = month_index(mname)) < 0 || two(v + 12, &y1) ||
        two(v + 14, &y2) || two(v + 17, &hh) || two(v + 20, &mm) ||
        two(v + 23, &ss) || day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60)
        return -1;
    char iso[32];
    snprintf(iso, sizeof iso, "%02d%02d-%02d-%02dT%02d:%02d:%02dZ", y1, y2,
             mon + 1, day, hh, mm, ss > 59 ? 59 : ss);
    int64_t at;
    if (time_parse_rfc3339(iso, strlen(iso), &at))
        return -1;
    int64_t w = at - now_ms;
    if (w < 0)
        w = 0;
    *wait_ms = w > GOOGLE_RETRY_AFTER_MAX_MS ? GOOGLE_RETRY_AFTER_MAX_MS : w;
    return 0;
}

static void copy_str(char *dst, size_t cap, const char *s, size_t n)
{
    if (cap == 0)
        return;
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, s, n);
    dst[n] = '\0';
    /* keep log lines and labels printable */
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)dst[i] < 0x20)
            dst[i] = ' ';
}

int google_parse_error(const char *body, size_t len, char *reason,
                       size_t reason_cap, char *message, size_t message_cap)
{
    lua_State *L = json_state();
    int rc = -1;
    if (reason_cap)
        reason[0] = '\0';
    if (message_cap)
        message[0] = '\0';
    if (!L || !body || len == 0)
        return -1;
    int top = lua_gettop(L);
    const char *s;
    size_t n;
    if (json_decode_object(L, body, len, NULL))
        goto done;
    int doc = lua_gettop(L);
    /* OAuth: {"error":"invalid_grant","error_description":"..."} */
    if (json_get_str(L, doc, "error", &s, &n, NULL) == 1) {
        copy_str(reason, reason_cap, s, n);
        if (json_get_str(L, doc, "error_description", &s, &n, NULL) == 1)
            copy_str(message, message_cap, s, n);
        rc = 0;
        goto done;
    }
    if (json_get_obj(L, doc, "error", NULL) != 1)
        goto done;
    int e = lua_gettop(L);
    rc = 0;
    if (json_get_str(L, e, "message", &s, &n, NULL) == 1)
        copy_str(message, message_cap, s, n);
    lua_getfield(L, e, "errors");
    if (lua_istable(L, -1)) {
        lua_rawgeti(L, -1, 1);
        if (lua_istable(L, -1) && json_get_str(L, -1, "reason", &s, &n, NULL) == 1)
            copy_str(reason, reason_cap, s, n);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    /* some errors carry only error.status ("UNAUTHENTICATED") */
    if (reason_cap && !reason[0] &&
        json_get_str(L, e, "status", &s, &n, NULL) == 1)
        copy_str(reason, reason_cap, s, n);
done:
    lua_settop(L, top);
    return rc;
}

int google_url_escape(struct buf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        unsigned char c = *p;
        /* RFC 3986 unreserved characters but '.': a path segment "." or
         * ".." is removed by URL normalisation (libcurl's included), which
         * turned PATCH .../events/.. into PATCH .../calendars/primary/
         * (issue 21). "%2E" is the same character to Google and is never
         * a dot segment to a normaliser. */
        int keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                   (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '~';
        if (keep) {
            if (buf_append(b, p, 1))
                return -1;
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            if (buf_append(b, e, 3))
                return -1;
        }
    }
    if (!b->data && buf_append(b, "", 0))
        return -1;
    return 0;
}

/* ------------------------------------------------------- one HTTP exchange */

struct xfer {
    struct google_resp *r;
    int too_large;
};

static size_t on_body(char *p, size_t sz, size_t nm, void *ud)
{
    struct xfer *x = ud;
    size_t n = sz * nm;
    if (x->r->body.len + n > GOOGLE_MAX_RESPONSE) {
        x->too_large = 1;
        return 0;
    }
    if (buf_append(&x->r->body, p, n))
        return 0;
    return n;
}

static size_t on_header(char *p, size_t sz, size_t nm, void *ud)
{
    struct xfer *x = ud;
    size_t n = sz * nm;
    static const char name[] = "retry-after:";
    if (n > sizeof name - 1 && strncasecmp(p, name, sizeof name - 1) == 0) {
        int64_t w;
        if (google_parse_retry_after(p + sizeof name - 1, n - (sizeof name - 1),
                                     time_now_ms(), &w) == 0)
            x->r->retry_after_ms = w;
    }
    return n;
}

static int on_progress(void *ud, curl_off_t a, curl_off_t b, curl_off_t c,
                       curl_off_t d)
{
    (void)ud, (void)a, (void)b, (void)c, (void)d;
    return google_cancelled() ? 1 : 0;
}

/* A retryable transport failure: nothing (or nothing usable) came back
 * because of the network, not because of what Google said. A partial or
 * oversized body is not retried: the sync fails and runs again later. */
static int transport_retryable(CURLcode c)
{
    return c == CURLE_COULDNT_CONNECT || c == CURLE_OPERATION_TIMEDOUT ||
           c == CURLE_GOT_NOTHING || c == CURLE_SEND_ERROR ||
           c == CURLE_RECV_ERROR || c == CURLE_COULDNT_RESOLVE_HOST;
}

/* 0 when an HTTP answer came back (any status), else -1 with *cc set. */
static int exchange(CURL *h, const struct google_exchange *e, struct google_resp *r,
                    CURLcode *cc, struct cs_err *err)
{
    struct curl_slist *hdrs = NULL, *t;
    struct xfer x = {r, 0};
    struct buf hb;
    int rc = -1;
    buf_init(&hb);
    google_resp_reset(r);
    *cc = CURLE_OK;
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, e->url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)GOOGLE_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)GOOGLE_TOTAL_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    /* the path goes out exactly as built: no dot-segment removal, should
     * a "." ever get past google_url_escape */
    curl_easy_setopt(h, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");
    char ua[96]; /* curl copies it */
    snprintf(ua, sizeof ua, "calsync/%s", CALSYNC_VERSION);
    curl_easy_setopt(h, CURLOPT_USERAGENT, ua);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &x);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &x);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    if (e->body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, e->body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)e->body_len);
    }
    if (strcmp(e->method, "GET") == 0)
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    else if (strcmp(e->method, "POST") != 0 || !e->body)
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, e->method);
    if (e->bearer) {
        buf_reset(&hb);
        if (buf_printf(&hb, "Authorization: Bearer %s", e->bearer))
            goto oom;
        if (!(t = curl_slist_append(hdrs, hb.data)))
            goto oom;
        hdrs = t;
    }
    if (e->ctype) {
        buf_reset(&hb);
        if (buf_printf(&hb, "Content-Type: %s", e->ctype))
            goto oom;
        if (!(t = curl_slist_append(hdrs, hb.data)))
            goto oom;
        hdrs = t;
    } else if (!e->body && strcmp(e->method, "POST") == 0) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
    }
    if (e->if_match) {
        buf_reset(&hb);
        if (buf_printf(&hb, "If-Match: %s", e->if_match))
            goto oom;
        if (!(t = curl_slist_append(hdrs, hb.data)))
            goto oom;
        hdrs = t;
    }
    /* no "Expect: 100-continue" round trip on larger bodies */
    if (!(t = curl_slist_append(hdrs, "Expect:")))
        goto oom;
    hdrs = t;
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    CURLcode c = curl_easy_perform(h);
    metrics_observe_curl("calsync_google_request_duration_seconds", h);
    if (c != CURLE_OK) {
        *cc = c;
        if (x.too_large)
            cs_err_set(err, "response larger than %u bytes", GOOGLE_MAX_RESPONSE);
        else if (google_cancelled())
            cs_err_set(err, "cancelled (shutting down)");
        else
            cs_err_set(err, "transport: %s", curl_easy_strerror(c));
        goto done;
    }
    long st = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &st);
    r->status = st;
    r->attempts++;
    if (st < 200 || st > 299)
        google_parse_error(r->body.data, r->body.len, r->reason, sizeof r->reason,
                           r->message, sizeof r->message);
    rc = 0;
    goto done;
oom:
    *cc = CURLE_OUT_OF_MEMORY;
    cs_err_set(err, "out of memory");
done:
    curl_slist_free_all(hdrs);
    buf_free(&hb);
    /* drop the references into this frame */
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, NULL);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, NULL);
    return rc;
}

/* Sleeps ms, in slices, returning -1 early when google_cancel() is called. */
static int wait_ms(int64_t ms)
{
    int64_t end = time_mono_ms() + ms;
    for (;;) {
        if (google_cancelled())
            return -1;
        int64_t left = end - time_mono_ms();
        if (left <= 0)
            return 0;
        if (left > 50)
            left = 50;
        struct timespec ts = {0, (long)left * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static void count_call(const char *method, long status)
{
    char series[160];
    snprintf(series, sizeof series,
             "calsync_google_requests_total{method=\"%s\",status=\"%ld\"}",
             method, status);
    metrics_inc(series);
}

/* The exchange plus retries of DESIGN §2 "Google failures". Returns 0 when
 * a final HTTP answer is in r (2xx or a status not retried), -1 with err
 * set when none could be had within the budget. `what` names the method
 * for metrics and logs. */
int google_exchange_retry(const char *what, const struct google_exchange *e,
                          struct google_resp *r, int64_t deadline,
                          struct cs_err *err)
{
    CURL *h = thread_handle();
    if (!h)
        return cs_err_set(err, "curl: cannot create a handle");
    for (int attempt = 0;; attempt++) {
        CURLcode cc;
        int64_t wait;
        if (google_cancelled())
            return cs_err_set(err, "cancelled (shutting down)");
        if (exchange(h, e, r, &cc, err) == 0) {
            count_call(what, r->status);
            if (!google_retryable(r->status, r->reason))
                return 0;
            wait = r->retry_after_ms >= 0
                       ? r->retry_after_ms
                       : backoff_ms(attempt + 1, GOOGLE_BACKOFF_BASE_MS, GOOGLE_BACKOFF_MAX_MS);
            cs_err_set(err, "%s: HTTP %ld %s", what, r->status, r->reason);
        } else {
            count_call(what, 0);
            if (!transport_retryable(cc))
                return -1;
            wait = backoff_ms(attempt + 1, GOOGLE_BACKOFF_BASE_MS, GOOGLE_BACKOFF_MAX_MS);
        }
        if (time_mono_ms() + wait > deadline || attempt + 1 >= GOOGLE_MAX_ATTEMPTS) {
            log_warn("google.retry_budget_spent", "method=%s status=%ld attempts=%d",
                     what, r->status, attempt + 1);
            char prev[sizeof err->msg];
            snprintf(prev, sizeof prev, "%s", err ? err->msg : "");
            return cs_err_set(err, "%.400s (retry budget spent)", prev);
        }
        char series[128];
        snprintf(series, sizeof series,
                 "calsync_google_retries_total{method=\"%s\"}", what);
        metrics_inc(series);
        log_info("google.retry", "method=%s status=%ld reason=%s wait_ms=%lld attempt=%d",
                 what, r->status, log_q(r->reason), (long long)wait, attempt + 1);
        if (wait_ms(wait))
            return cs_err_set(err, "cancelled (shutting down)");
    }
}

/* ------------------------------------------------------------- the calls */

static int call_run(struct google_auth *a, struct google_call *c,
                    struct google_resp *r, struct cs_err *err)
{
    char token[CRED_TOKEN_MAX + 1];
    int64_t deadline = time_mono_ms() + (a->budget_ms > 0 ? a->budget_ms
                                                          : GOOGLE_RETRY_BUDGET_MS);
    int rc;
    google_resp_free(r);
    google_resp_init(r);
    if (!c->url.data) {
        cs_err_set(err, "out of memory");
        return GOOGLE_ETRANSPORT;
    }
    rc = google_access_token(a, 0, token, sizeof token, r, err);
    for (int refreshed = 0; rc == GOOGLE_OK;) {
        struct google_exchange e = {
            .method = c->method, .url = c->url.data, .bearer = token,
            .ctype = c->body ? "application/json" : NULL,
            .body = c->body, .body_len = c->body ? strlen(c->body) : 0,
            .if_match = c->if_match,
        };
        if (google_budget_acquire(a->credential_id, deadline, err) ||
            google_exchange_retry(c->what, &e, r, deadline, err)) {
            rc = GOOGLE_ETRANSPORT;
            break;
        }
        if (r->status == 401 && !refreshed) {
            refreshed = 1;
            log_info("google.unauthorized", "method=%s credential=%lld", c->what,
                     (long long)a->credential_id);
            rc = google_access_token(a, 1, token, sizeof token, r, err);
            continue;
        }
        if (r->status < 200 || r->status > 299) {
            cs_err_set(err, "%s: HTTP %ld %s%s%s", c->what, r->status, r->reason,
                       r->message[0] ? ": " : "", r->message);
            rc = GOOGLE_EHTTP;
            break;
        }
        if (c->push) {
            lua_State *L = json_state();
            if (!L) {
                cs_err_set(err, "out of memory");
                rc = GOOGLE_ETRANSPORT;
            } else if (json_decode_object(L, r->body.data ? r->body.data : "",
                                          r->body.len, err)) {
                char m[sizeof err->msg];
                snprintf(m, sizeof m, "%s", err->msg);
                cs_err_set(err, "%s: %.400s", c->what, m);
                rc = GOOGLE_EBADRESP;
            }
        }
        break;
    }
    return rc;
}

/* Starts c->url with the calendar's collection and `tail`. An id Google
 * cannot have issued (id_valid_calendar) builds nothing and marks the call
 * invalid: call_url then refuses it before any request. -1 on OOM. */
int google_url_start(struct google_call *c, const char *cal, const char *tail)
{
    if (!cal || !id_valid_calendar(cal, strlen(cal))) {
        c->invalid = "calendar id";
        return 0;
    }
    struct buf *u = &c->url;
    return buf_puts(u, g_cfg->google.api_base) || buf_puts(u, "/calendars/") ||
           google_url_escape(u, cal) || buf_puts(u, tail);
}

/* Runs a call whose URL was built into c->url (`bad`: building it ran out
 * of memory, which call_run reports for an empty URL) and frees the URL.
 * A call whose builder refused an id makes no request: GOOGLE_EINVAL. */
int google_call_url(struct google_auth *a, struct google_call *c, int bad,
                    struct google_resp *resp, struct cs_err *err)
{
    if (c->invalid) {
        buf_free(&c->url);
        google_resp_free(resp);
        google_resp_init(resp);
        metrics_inc("calsync_google_invalid_ids_total");
        cs_err_set(err, "%s: refused: the %s is not one Google can have issued",
                   c->what, c->invalid);
        return GOOGLE_EINVAL;
    }
    if (bad)
        buf_free(&c->url);
    int rc = call_run(a, c, resp, err);
    buf_free(&c->url);
    return rc;
}
