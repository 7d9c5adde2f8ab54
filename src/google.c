/* google.c -- the Google Calendar v3 client: HTTP, retries, OAuth, calls.
 *
 * Main objects: a per-thread CURL easy handle (connection reuse), struct
 * google_resp (one call's outcome), and the retry loop google_call() that
 * every Calendar method goes through. See google.h for the rules and
 * docs/internals/google.md for why they are what they are.
 */
#include "google.h"

#include "calendar.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "secret.h"

#include <curl/curl.h>
#include <lua.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static const struct config *g_cfg;
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

static void resp_reset(struct google_resp *r)
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

struct exchange {
    const char *method;   /* GET POST PATCH DELETE */
    const char *url;
    const char *bearer;   /* NULL: no Authorization */
    const char *ctype;    /* body content type, NULL when no body */
    const char *body;
    size_t body_len;
    const char *if_match;
};

/* 0 when an HTTP answer came back (any status), else -1 with *cc set. */
static int exchange(CURL *h, const struct exchange *e, struct google_resp *r,
                    CURLcode *cc, struct cs_err *err)
{
    struct curl_slist *hdrs = NULL, *t;
    struct xfer x = {r, 0};
    struct buf hb;
    int rc = -1;
    buf_init(&hb);
    resp_reset(r);
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
    curl_easy_setopt(h, CURLOPT_USERAGENT, "calsync");
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
static int exchange_retry(const char *what, const struct exchange *e,
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

/* ------------------------------------------------------------------ OAuth */

static int token_load(struct store_conn *db, int64_t cred, struct buf *refresh,
                      char *access, size_t cap, int64_t *expires_at,
                      int *revoked, struct cs_err *err)
{
    return credential_tokens_load(db, cred, refresh, access, cap, expires_at, revoked, err);
}

static int token_store(struct store_conn *db, int64_t cred, const char *access,
                       int64_t expires_at, struct cs_err *err)
{
    return credential_access_store(db, cred, access, expires_at, err);
}

/* Builds "k=v&k=v" form text. */
static int form_add(struct buf *b, const char *k, const char *v)
{
    if ((b->len && buf_append(b, "&", 1)) || buf_puts(b, k) || buf_append(b, "=", 1))
        return -1;
    return google_url_escape(b, v ? v : "");
}

static int refresh_token(struct google_auth *a, const char *refresh, char *out,
                         size_t cap, struct google_resp *r, struct cs_err *err)
{
    struct buf form;
    lua_State *L = json_state();
    int rc = GOOGLE_ETRANSPORT, top = L ? lua_gettop(L) : 0;
    buf_init(&form);
    if (!L) {
        cs_err_set(err, "out of memory");
        goto done;
    }
    if (!g_cfg->google.client_id || !*g_cfg->google.client_id ||
        !g_cfg->google.client_secret || !*g_cfg->google.client_secret) {
        /* never send a refresh token with no client: Google would refuse
         * it, and an unconfigured test instance must not reach Google */
        cs_err_set(err, "google.client_id and google.client_secret are not configured");
        goto done;
    }
    if (form_add(&form, "grant_type", "refresh_token") ||
        form_add(&form, "refresh_token", refresh) ||
        form_add(&form, "client_id", g_cfg->google.client_id) ||
        form_add(&form, "client_secret", g_cfg->google.client_secret)) {
        cs_err_set(err, "out of memory");
        goto done;
    }
    struct exchange e = {
        .method = "POST", .url = g_cfg->google.token_url,
        .ctype = "application/x-www-form-urlencoded",
        .body = form.data, .body_len = form.len,
    };
    if (exchange_retry("oauth.token", &e, r, time_mono_ms() + GOOGLE_RETRY_BUDGET_MS,
                       err))
        goto done;
    if (r->status == 400 || r->status == 401) {
        if (strcmp(r->reason, "invalid_grant") == 0) {
            struct cs_err e2;
            char why[sizeof r->message + 32];
            snprintf(why, sizeof why, "invalid_grant%s%s", r->message[0] ? ": " : "",
                     r->message);
            if (credential_revoke(a->db, a->credential_id, why, &e2))
                log_error("google.revoke_failed", "credential=%lld err=%s",
                          (long long)a->credential_id, log_q(e2.msg));
            log_warn("google.credential_revoked", "credential=%lld reason=%s",
                     (long long)a->credential_id, log_q(why));
            cs_err_set(err, "refresh token refused: %s", why);
            rc = GOOGLE_EREVOKED;
            goto done;
        }
    }
    if (r->status < 200 || r->status > 299) {
        cs_err_set(err, "token endpoint: HTTP %ld %s %s", r->status, r->reason,
                   r->message);
        rc = GOOGLE_EHTTP;
        goto done;
    }
    const char *tok;
    size_t n;
    int64_t expires_in = 3600;
    if (json_decode_object(L, r->body.data ? r->body.data : "", r->body.len, err)) {
        rc = GOOGLE_EBADRESP;
        goto done;
    }
    if (json_get_str(L, -1, "access_token", &tok, &n, err) != 1 || n == 0 ||
        n >= cap || strlen(tok) != n ||
        json_get_int(L, -1, "expires_in", &expires_in, err) < 0 ||
        expires_in <= 0 || expires_in > 86400 * 366) {
        cs_err_set(err, "token endpoint: malformed answer");
        rc = GOOGLE_EBADRESP;
        goto done;
    }
    memcpy(out, tok, n + 1);
    if (token_store(a->db, a->credential_id, out, time_now_ms() + expires_in * 1000,
                    err)) {
        rc = GOOGLE_ETRANSPORT;
        goto done;
    }
    metrics_inc("calsync_google_token_refreshes_total");
    log_info("google.token_refreshed", "credential=%lld expires_in=%lld",
             (long long)a->credential_id, (long long)expires_in);
    rc = GOOGLE_OK;
done:
    if (L)
        lua_settop(L, top);
    buf_free(&form);
    return rc;
}

int google_access_token(struct google_auth *a, int force, char *out,
                        size_t cap, struct google_resp *resp,
                        struct cs_err *err)
{
    struct buf refresh;
    int64_t exp = 0;
    int revoked = 0, rc;
    buf_init(&refresh);
    resp_reset(resp);
    if (token_load(a->db, a->credential_id, &refresh, out, cap, &exp, &revoked, err)) {
        rc = GOOGLE_ETRANSPORT;
        goto done;
    }
    if (revoked) {
        cs_err_set(err, "credential %lld is revoked", (long long)a->credential_id);
        rc = GOOGLE_EREVOKED;
        goto done;
    }
    if (!force && out[0] && exp > time_now_ms() + GOOGLE_REFRESH_AHEAD_MS) {
        rc = GOOGLE_OK;
        goto done;
    }
    rc = refresh_token(a, refresh.data ? refresh.data : "", out, cap, resp, err);
done:
    buf_free(&refresh);
    return rc;
}

/* ------------------------------------------------------------- the calls */

struct call {
    const char *what;      /* metrics name: events.list ... */
    const char *method;
    const char *invalid;   /* set by the URL builders: which id was refused */
    struct buf url;
    const char *body;      /* JSON, or NULL */
    const char *if_match;
    int push;              /* decode and push the 2xx body */
};

static int call_run(struct google_auth *a, struct call *c,
                    struct google_resp *r, struct cs_err *err)
{
    char token[CRED_TOKEN_MAX + 1];
    int64_t deadline = time_mono_ms() + GOOGLE_RETRY_BUDGET_MS;
    int rc;
    google_resp_free(r);
    google_resp_init(r);
    if (!c->url.data) {
        cs_err_set(err, "out of memory");
        return GOOGLE_ETRANSPORT;
    }
    rc = google_access_token(a, 0, token, sizeof token, r, err);
    for (int refreshed = 0; rc == GOOGLE_OK;) {
        struct exchange e = {
            .method = c->method, .url = c->url.data, .bearer = token,
            .ctype = c->body ? "application/json" : NULL,
            .body = c->body, .body_len = c->body ? strlen(c->body) : 0,
            .if_match = c->if_match,
        };
        if (exchange_retry(c->what, &e, r, deadline, err)) {
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
static int url_start(struct call *c, const char *cal, const char *tail)
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
static int call_url(struct google_auth *a, struct call *c, int bad,
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

int google_events_list(struct google_auth *a, const char *calendar_id,
                       const struct google_list_params *p,
                       struct google_resp *resp, struct cs_err *err)
{
    struct call c = {.what = "events.list", .method = "GET", .push = 1};
    buf_init(&c.url);
    int bad = url_start(&c, calendar_id, "/events?singleEvents=true&maxResults=2500");
    if (p->sync_token) {
        bad |= buf_puts(&c.url, "&syncToken=") || google_url_escape(&c.url, p->sync_token);
    } else {
        if (p->show_deleted)
            bad |= buf_puts(&c.url, "&showDeleted=true");
        if (p->private_prop)
            bad |= buf_puts(&c.url, "&privateExtendedProperty=") ||
                   google_url_escape(&c.url, p->private_prop);
    }
    if (p->page_token)
        bad |= buf_puts(&c.url, "&pageToken=") || google_url_escape(&c.url, p->page_token);
    return call_url(a, &c, bad, resp, err);
}

static int event_url(struct call *c, const char *cal, const char *ev)
{
    if (!ev || !id_valid_event(ev, strlen(ev))) {
        c->invalid = "event id";
        return 0;
    }
    return url_start(c, cal, "/events/") || (!c->invalid && google_url_escape(&c->url, ev));
}

int google_events_instances(struct google_auth *a, const char *calendar_id,
                            const char *series_id, const char *page_token,
                            struct google_resp *resp, struct cs_err *err)
{
    struct call c = {.what = "events.instances", .method = "GET", .push = 1};
    buf_init(&c.url);
    int bad = event_url(&c, calendar_id, series_id) ||
              buf_puts(&c.url, "/instances?showDeleted=true&maxResults=2500");
    if (page_token)
        bad |= buf_puts(&c.url, "&pageToken=") || google_url_escape(&c.url, page_token);
    return call_url(a, &c, bad, resp, err);
}

int google_events_get(struct google_auth *a, const char *calendar_id,
                      const char *event_id, struct google_resp *resp,
                      struct cs_err *err)
{
    struct call c = {.what = "events.get", .method = "GET", .push = 1};
    buf_init(&c.url);
    return call_url(a, &c, event_url(&c, calendar_id, event_id), resp, err);
}

int google_events_insert(struct google_auth *a, const char *calendar_id,
                         const char *body_json, struct google_resp *resp,
                         struct cs_err *err)
{
    struct call c = {.what = "events.insert", .method = "POST", .push = 1,
                     .body = body_json};
    buf_init(&c.url);
    return call_url(a, &c, url_start(&c, calendar_id, "/events"), resp, err);
}

int google_events_patch(struct google_auth *a, const char *calendar_id,
                        const char *event_id, const char *body_json,
                        const char *if_match, struct google_resp *resp,
                        struct cs_err *err)
{
    struct call c = {.what = "events.patch", .method = "PATCH", .push = 1,
                     .body = body_json, .if_match = if_match};
    buf_init(&c.url);
    return call_url(a, &c, event_url(&c, calendar_id, event_id), resp, err);
}

int google_events_delete(struct google_auth *a, const char *calendar_id,
                         const char *event_id, const char *if_match,
                         struct google_resp *resp, struct cs_err *err)
{
    struct call c = {.what = "events.delete", .method = "DELETE",
                     .if_match = if_match};
    buf_init(&c.url);
    return call_url(a, &c, event_url(&c, calendar_id, event_id), resp, err);
}

int google_events_watch(struct google_auth *a, const char *calendar_id,
                        const char *channel_id, const char *token,
                        const char *address, int64_t ttl_s,
                        struct google_resp *resp, struct cs_err *err)
{
    struct call c = {.what = "events.watch", .method = "POST", .push = 1};
    struct buf body;
    buf_init(&c.url);
    buf_init(&body);
    int bad = url_start(&c, calendar_id, "/events/watch");
    bad |= buf_puts(&body, "{\"id\":") || buf_json_strz(&body, channel_id) ||
           buf_puts(&body, ",\"type\":\"web_hook\",\"address\":") ||
           buf_json_strz(&body, address) || buf_puts(&body, ",\"token\":") ||
           buf_json_strz(&body, token) ||
           buf_printf(&body, ",\"params\":{\"ttl\":\"%lld\"}}", (long long)ttl_s);
    c.body = body.data;
    int rc = call_url(a, &c, bad, resp, err);
    buf_free(&body);
    return rc;
}

int google_channels_stop(struct google_auth *a, const char *channel_id,
                         const char *resource_id, struct google_resp *resp,
                         struct cs_err *err)
{
    struct call c = {.what = "channels.stop", .method = "POST"};
    struct buf body;
    buf_init(&c.url);
    buf_init(&body);
    int bad = buf_puts(&c.url, g_cfg->google.api_base) ||
              buf_puts(&c.url, "/channels/stop");
    bad |= buf_puts(&body, "{\"id\":") || buf_json_strz(&body, channel_id) ||
           buf_puts(&body, ",\"resourceId\":") || buf_json_strz(&body, resource_id) ||
           buf_puts(&body, "}");
    c.body = body.data;
    int rc = call_url(a, &c, bad, resp, err);
    buf_free(&body);
    return rc;
}
