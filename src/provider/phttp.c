/* phttp.c -- the HTTP exchange the HTTP providers share: one libcurl
 * exchange, the retry loop with jittered backoff and Retry-After, and the
 * authenticated call (request budget, access token, one refresh after a
 * 401). What differs per provider comes in its struct phttp_client.
 *
 * Main objects: a per-thread CURL easy handle (connection reuse, one for
 * every provider a thread talks to), exchange() (one request, bounded
 * answer), phttp_exchange_retry() (also the token endpoint's, poauth.c)
 * and phttp_call_run(). See phttp.h and docs/internals/provider.md.
 */
#include "provider/phttp.h"

#include "json.h"
#include "log.h"
#include "metrics.h"
#include "store/credentials.h"
#include "version.h"

#include <curl/curl.h>
#include <lua.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

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

void phttp_thread_release(void)
{
    pthread_once(&g_once, key_init);
    CURL *h = pthread_getspecific(g_key);
    if (h) {
        pthread_setspecific(g_key, NULL);
        curl_easy_cleanup(h);
    }
}

void phttp_init(struct phttp_client *c, const struct config *cfg)
{
    c->cfg = cfg;
    atomic_store(&c->cancelled, 0);
}

void phttp_cancel(struct phttp_client *c)
{
    atomic_store(&c->cancelled, 1);
}

int phttp_cancelled(const struct phttp_client *c)
{
    return atomic_load(&c->cancelled);
}

void phttp_resp_init(struct phttp_resp *r)
{
    memset(r, 0, sizeof *r);
    buf_init(&r->body);
    r->retry_after_ms = -1;
}

void phttp_resp_free(struct phttp_resp *r)
{
    buf_free(&r->body);
}

void phttp_resp_reset(struct phttp_resp *r)
{
    r->status = 0;
    r->reason[0] = r->message[0] = '\0';
    buf_reset(&r->body);
    r->retry_after_ms = -1;
}

const char *phttp_ev(const struct phttp_client *c, const char *suffix, char *buf,
                     size_t cap)
{
    snprintf(buf, cap, "%s.%s", c->name, suffix);
    return buf;
}

/* ----------------------------------------------------------- pure pieces */

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

/* delta-seconds: digits, and with `fraction` a '.' and at least one more
 * digit (Graph sends "2.128"), kept to the ms. */
static int delta_seconds(const char *v, size_t n, int fraction, int64_t *wait_ms)
{
    int64_t s = 0, frac = 0, scale = 1000;
    size_t i = 0;
    for (; i < n && !(fraction && v[i] == '.'); i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        if (s < PHTTP_RETRY_AFTER_MAX_MS / 1000 + 1)
            s = s * 10 + (v[i] - '0');
    }
    if (i < n) {
        if (++i == n)
            return -1;
        for (; i < n; i++) {
            if (v[i] < '0' || v[i] > '9')
                return -1;
            if (scale > 1) {
                scale /= 10;
                frac += (v[i] - '0') * scale;
            }
        }
    }
    int64_t ms = s * 1000 + frac;
    *wait_ms = ms > PHTTP_RETRY_AFTER_MAX_MS ? PHTTP_RETRY_AFTER_MAX_MS : ms;
    return 0;
}

int phttp_parse_retry_after(const char *v, size_t n, int64_t now_ms, int fraction,
                            int64_t *wait_ms)
{
    while (n && (*v == ' ' || *v == '\t'))
        v++, n--;
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t' || v[n - 1] == '\r' ||
                 v[n - 1] == '\n'))
        n--;
    if (n == 0)
        return -1;
    if (v[0] >= '0' && v[0] <= '9')
        return delta_seconds(v, n, fraction, wait_ms);
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
    *wait_ms = w > PHTTP_RETRY_AFTER_MAX_MS ? PHTTP_RETRY_AFTER_MAX_MS : w;
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

int phttp_copy_field(lua_State *L, int idx, const char *key, char *dst, size_t cap)
{
    const char *s;
    size_t n;
    if (json_get_str(L, idx, key, &s, &n, NULL) != 1)
        return 0;
    copy_str(dst, cap, s, n);
    return 1;
}

int phttp_parse_error(const struct phttp_client *c, const char *body, size_t len,
                      char *reason, size_t reason_cap, char *message,
                      size_t message_cap)
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
    if (json_decode_object(L, body, len, NULL))
        goto done;
    int doc = lua_gettop(L);
    /* OAuth: {"error":"invalid_grant","error_description":"..."} */
    if (phttp_copy_field(L, doc, "error", reason, reason_cap)) {
        phttp_copy_field(L, doc, "error_description", message, message_cap);
        rc = 0;
        goto done;
    }
    if (json_get_obj(L, doc, "error", NULL) != 1)
        goto done;
    rc = 0;
    c->error_detail(L, lua_gettop(L), reason, reason_cap, message, message_cap);
done:
    lua_settop(L, top);
    return rc;
}

int phttp_url_escape(struct buf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        unsigned char c = *p;
        /* RFC 3986 unreserved characters but '.': a path segment "." or
         * ".." is removed by URL normalisation (libcurl's included), which
         * turned PATCH .../events/.. into PATCH .../calendars/primary/
         * (issue 21). "%2E" is the same character to the provider and is
         * never a dot segment to a normaliser. */
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
    const struct phttp_client *c;
    struct phttp_resp *r;
    int too_large;
};

static size_t on_body(char *p, size_t sz, size_t nm, void *ud)
{
    struct xfer *x = ud;
    size_t n = sz * nm;
    if (x->r->body.len + n > PHTTP_MAX_RESPONSE) {
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
        if (phttp_parse_retry_after(p + sizeof name - 1, n - (sizeof name - 1),
                                    time_now_ms(), x->c->retry_after_fraction, &w) == 0)
            x->r->retry_after_ms = w;
    }
    return n;
}

static int on_progress(void *ud, curl_off_t a, curl_off_t b, curl_off_t c,
                       curl_off_t d)
{
    (void)a, (void)b, (void)c, (void)d;
    return phttp_cancelled(ud) ? 1 : 0;
}

/* A retryable transport failure: nothing (or nothing usable) came back
 * because of the network, not because of what the provider said. A
 * partial or oversized body is not retried: the sync fails and runs again
 * later. */
static int transport_retryable(CURLcode c)
{
    return c == CURLE_COULDNT_CONNECT || c == CURLE_OPERATION_TIMEDOUT ||
           c == CURLE_GOT_NOTHING || c == CURLE_SEND_ERROR ||
           c == CURLE_RECV_ERROR || c == CURLE_COULDNT_RESOLVE_HOST;
}

/* Appends the header line prefix + value to *hdrs. 0 or -1 on OOM. */
static int add_header(struct curl_slist **hdrs, struct buf *hb, const char *prefix,
                      const char *value)
{
    struct curl_slist *t;
    buf_reset(hb);
    if (buf_puts(hb, prefix) || buf_puts(hb, value))
        return -1;
    if (!(t = curl_slist_append(*hdrs, hb->data)))
        return -1;
    *hdrs = t;
    return 0;
}

/* 0 when an HTTP answer came back (any status), else -1 with *cc set. */
static int exchange(struct phttp_client *pc, CURL *h, const struct phttp_exchange *e,
                    struct phttp_resp *r, CURLcode *cc, struct cs_err *err)
{
    struct curl_slist *hdrs = NULL, *t;
    struct xfer x = {pc, r, 0};
    struct buf hb;
    char series[128];
    int rc = -1;
    buf_init(&hb);
    phttp_resp_reset(r);
    *cc = CURLE_OK;
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, e->url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)PHTTP_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)PHTTP_TOTAL_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    /* the path goes out exactly as built: no dot-segment removal, should
     * a "." ever get past phttp_url_escape */
    curl_easy_setopt(h, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");
    char ua[96]; /* curl copies it */
    snprintf(ua, sizeof ua, "calsync/%s", CALSYNC_VERSION);
    curl_easy_setopt(h, CURLOPT_USERAGENT, pc->user_agent ? pc->user_agent : ua);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &x);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &x);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, pc);
    if (e->body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, e->body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)e->body_len);
    }
    if (strcmp(e->method, "GET") == 0)
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    else if (strcmp(e->method, "POST") != 0 || !e->body)
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, e->method);
    if (e->bearer && add_header(&hdrs, &hb, "Authorization: Bearer ", e->bearer))
        goto oom;
    if (e->ctype) {
        if (add_header(&hdrs, &hb, "Content-Type: ", e->ctype))
            goto oom;
    } else if (!e->body && strcmp(e->method, "POST") == 0) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
    }
    if (e->if_match && add_header(&hdrs, &hb, "If-Match: ", e->if_match))
        goto oom;
    for (int i = 0; i < PHTTP_HEADERS_MAX && e->headers[i]; i++)
        if (add_header(&hdrs, &hb, "", e->headers[i]))
            goto oom;
    /* no "Expect: 100-continue" round trip on larger bodies */
    if (!(t = curl_slist_append(hdrs, "Expect:")))
        goto oom;
    hdrs = t;
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    CURLcode c = curl_easy_perform(h);
    snprintf(series, sizeof series, "calsync_%s_request_duration_seconds", pc->name);
    metrics_observe_curl(series, h);
    if (c != CURLE_OK) {
        *cc = c;
        if (x.too_large)
            cs_err_set(err, "response larger than %u bytes", PHTTP_MAX_RESPONSE);
        else if (phttp_cancelled(pc))
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
        phttp_parse_error(pc, r->body.data, r->body.len, r->reason, sizeof r->reason,
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

/* Sleeps ms, in slices, returning -1 early when c is cancelled. */
static int wait_ms(const struct phttp_client *c, int64_t ms)
{
    int64_t end = time_mono_ms() + ms;
    for (;;) {
        if (phttp_cancelled(c))
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

static void count_call(const struct phttp_client *c, const char *method, long status)
{
    char series[160];
    snprintf(series, sizeof series,
             "calsync_%s_requests_total{method=\"%s\",status=\"%ld\"}", c->name,
             method, status);
    metrics_inc(series);
}

int phttp_exchange_retry(struct phttp_client *c, const char *what,
                         const struct phttp_exchange *e, struct phttp_resp *r,
                         int64_t deadline, struct cs_err *err)
{
    CURL *h = thread_handle();
    char ev[48];
    if (!h)
        return cs_err_set(err, "curl: cannot create a handle");
    for (int attempt = 0;; attempt++) {
        CURLcode cc;
        int64_t wait;
        if (phttp_cancelled(c))
            return cs_err_set(err, "cancelled (shutting down)");
        if (exchange(c, h, e, r, &cc, err) == 0) {
            count_call(c, what, r->status);
            if (!c->retryable(r->status, r->reason))
                return 0;
            wait = r->retry_after_ms >= 0
                       ? r->retry_after_ms
                       : backoff_ms(attempt + 1, PHTTP_BACKOFF_BASE_MS, PHTTP_BACKOFF_MAX_MS);
            cs_err_set(err, "%s: HTTP %ld %s", what, r->status, r->reason);
        } else {
            count_call(c, what, 0);
            if (!transport_retryable(cc))
                return -1;
            wait = backoff_ms(attempt + 1, PHTTP_BACKOFF_BASE_MS, PHTTP_BACKOFF_MAX_MS);
        }
        if (time_mono_ms() + wait > deadline || attempt + 1 >= PHTTP_MAX_ATTEMPTS) {
            log_warn(phttp_ev(c, "retry_budget_spent", ev, sizeof ev),
                     "method=%s status=%ld attempts=%d", what, r->status, attempt + 1);
            char prev[sizeof err->msg];
            snprintf(prev, sizeof prev, "%s", err ? err->msg : "");
            return cs_err_set(err, "%.400s (retry budget spent)", prev);
        }
        char series[128];
        snprintf(series, sizeof series, "calsync_%s_retries_total{method=\"%s\"}",
                 c->name, what);
        metrics_inc(series);
        log_info(phttp_ev(c, "retry", ev, sizeof ev),
                 "method=%s status=%ld reason=%s wait_ms=%lld attempt=%d", what,
                 r->status, log_q(r->reason), (long long)wait, attempt + 1);
        if (wait_ms(c, wait))
            return cs_err_set(err, "cancelled (shutting down)");
    }
}

/* ------------------------------------------------------------- the call */

/* Decodes the 2xx body and pushes it: PHTTP_OK or PHTTP_EBADRESP. */
static int push_body(const char *what, const struct phttp_resp *r, struct cs_err *err)
{
    lua_State *L = json_state();
    if (!L) {
        cs_err_set(err, "out of memory");
        return PHTTP_ETRANSPORT;
    }
    if (json_decode_object(L, r->body.data ? r->body.data : "", r->body.len, err)) {
        char m[sizeof err->msg];
        snprintf(m, sizeof m, "%s", err->msg);
        cs_err_set(err, "%s: %.400s", what, m);
        return PHTTP_EBADRESP;
    }
    return PHTTP_OK;
}

static int call_auth(struct phttp_client *c, struct phttp_auth *a,
                     struct phttp_call *call, struct phttp_resp *r, struct cs_err *err)
{
    char token[CRED_TOKEN_MAX + 1];
    char ev[48];
    int64_t deadline = time_mono_ms() + (a->budget_ms > 0 ? a->budget_ms
                                                          : PHTTP_RETRY_BUDGET_MS);
    int rc;
    phttp_resp_free(r);
    phttp_resp_init(r);
    if (!call->url.data) {
        cs_err_set(err, "out of memory");
        return PHTTP_ETRANSPORT;
    }
    rc = c->access_token(a, 0, token, sizeof token, r, err);
    for (int refreshed = 0; rc == PHTTP_OK;) {
        struct phttp_exchange e = {
            .method = call->method, .url = call->url.data, .bearer = token,
            .ctype = call->body ? "application/json" : NULL,
            .body = call->body, .body_len = call->body ? strlen(call->body) : 0,
            .if_match = call->if_match,
        };
        memcpy(e.headers, call->headers, sizeof e.headers);
        if ((c->budget && c->budget(a->credential_id, deadline, err)) ||
            phttp_exchange_retry(c, call->what, &e, r, deadline, err)) {
            rc = PHTTP_ETRANSPORT;
            break;
        }
        if (r->status == 401 && !refreshed) {
            refreshed = 1;
            log_info(phttp_ev(c, "unauthorized", ev, sizeof ev),
                     "method=%s credential=%lld", call->what,
                     (long long)a->credential_id);
            rc = c->access_token(a, 1, token, sizeof token, r, err);
            continue;
        }
        if (r->status < 200 || r->status > 299) {
            cs_err_set(err, "%s: HTTP %ld %s%s%s", call->what, r->status, r->reason,
                       r->message[0] ? ": " : "", r->message);
            rc = PHTTP_EHTTP;
            break;
        }
        if (call->push)
            rc = push_body(call->what, r, err);
        break;
    }
    return rc;
}

int phttp_call_run(struct phttp_client *c, struct phttp_auth *a,
                   struct phttp_call *call, int bad, struct phttp_resp *resp,
                   struct cs_err *err)
{
    if (call->invalid) {
        char series[96];
        buf_free(&call->url);
        phttp_resp_free(resp);
        phttp_resp_init(resp);
        snprintf(series, sizeof series, "calsync_%s_invalid_ids_total", c->name);
        metrics_inc(series);
        cs_err_set(err, "%s: refused: the %s is not one %s can have issued", call->what,
                   call->invalid, c->display);
        return PHTTP_EINVAL;
    }
    if (bad)
        buf_free(&call->url);
    int rc = call_auth(c, a, call, resp, err);
    buf_free(&call->url);
    return rc;
}

int phttp_rc_class(enum provider_op op, int g, const struct phttp_resp *resp,
                   int (*classify)(enum provider_op, long, const char *))
{
    switch (g) {
    case PHTTP_OK: return PROVIDER_OK;
    case PHTTP_EREVOKED: return PROVIDER_REVOKED;
    case PHTTP_EINVAL: return PROVIDER_PERMANENT;
    case PHTTP_EBADRESP: return PROVIDER_MALFORMED;
    case PHTTP_EHTTP: return classify(op, resp->status, resp->reason);
    default: return PROVIDER_TRANSIENT;
    }
}

int phttp_status_class(enum provider_op op, long status)
{
    switch (op) {
    case PROVIDER_OP_LIST:
    case PROVIDER_OP_LIST_FULL:
        /* a 410 without a cursor, 409... are retried by the next sync */
        return status == 400 || status == 403 || status == 404 ? PROVIDER_PERMANENT
                                                               : PROVIDER_TRANSIENT;
    case PROVIDER_OP_OCCURRENCES:
        return status == 404 || status == 410 ? PROVIDER_GONE : PROVIDER_TRANSIENT;
    case PROVIDER_OP_SUBSCRIBE:
        return status == 404 ? PROVIDER_GONE : PROVIDER_PERMANENT;
    case PROVIDER_OP_READ:
    case PROVIDER_OP_WRITE:
        break;
    }
    if (status == 412)
        return PROVIDER_CONFLICT;
    if (status == 404 || status == 410)
        return PROVIDER_GONE;
    return PROVIDER_PERMANENT;
}

int phttp_finish(struct provider_ctx *px, enum provider_op op, int g,
                 struct phttp_resp *resp,
                 int (*classify)(enum provider_op, long, const char *))
{
    px->last.status = resp->status;
    snprintf(px->last.reason, sizeof px->last.reason, "%s", resp->reason);
    px->last.retry_after_ms = resp->retry_after_ms;
    snprintf(px->last.message, sizeof px->last.message, "%s", resp->message);
    int rc = phttp_rc_class(op, g, resp, classify);
    phttp_resp_free(resp);
    return rc;
}
