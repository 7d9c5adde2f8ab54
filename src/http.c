/* http.c -- libmicrohttpd server: admission, bodies, routing, auth, the
 * API pool, slow-client deadlines, metrics. See http.h and
 * docs/internals/http.md.
 *
 * Threads. HTTP_EVENT_THREADS event threads (libmicrohttpd's internal
 * thread pool, one epoll loop each) own the sockets. A connection that has
 * sent half a header occupies no thread, only a connection slot, so the
 * defences against slow clients are about slots: per client address, in
 * total, and in time (the reaper, below). Handlers that may block run on
 * HTTP_API_THREADS API threads: the event thread suspends the connection,
 * queues it and goes on serving other sockets; an API thread runs the
 * handler, keeps the answer and resumes the connection, and the event
 * thread sends the answer. HTTP_INLINE handlers (the push intake) answer
 * on the event thread: they only read the database (WAL: a reader never
 * waits for the writer) and append to the intake journal. So API writes
 * waiting for SQLite's write lock, however many, never delay a push.
 *
 * Admission, on libmicrohttpd's first call (headers complete, no body
 * read): absurd Content-Length (413), Host on API paths (400), Origin
 * (403), route (404), token (401), method (404), then the body rules: 413
 * for a route that takes no body, 415 for a body that is not JSON, 503
 * when the body budget is spent. A refused request whose declared body is small
 * (<= HTTP_DRAIN_SMALL) is drained without being stored, so the client
 * reads the answer rather than a reset; a larger one is answered at once
 * and the connection is closed after the answer (libmicrohttpd discards
 * the rest). Nothing of a refused request is ever buffered.
 *
 * Bodies over HTTP_BODY_MAX from an authorised client are drained up to
 * HTTP_DRAIN_MAX and answered 413; a larger declared length is answered at
 * once; an endless chunked body is cut at HTTP_DRAIN_MAX. Every stored
 * body byte is taken from one budget of HTTP_BODY_BUDGET shared by all
 * connections (declared lengths are taken whole, at admission).
 *
 * Deadlines. libmicrohttpd's timeout is an idle timeout: any byte resets
 * it, so a client sending a header line every few seconds would keep its
 * slot forever. The reaper thread shuts down (shutdown(2); the event
 * thread then sees end-of-file and closes) a connection that has not
 * completed a request's header within header_timeout seconds of its start
 * or of its previous answer -- which is also the keep-alive idle limit --
 * or its body within HTTP_BODY_TIMEOUT_MS of its header. A connection
 * whose request is being handled or answered is never reaped.
 */
#include "http.h"

#include "log.h"
#include "metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define HTTP_DRAIN_MAX (8u << 20)    /* bodies over 1 MiB are read and dropped up to this */
#define HTTP_DRAIN_SMALL (64u << 10) /* refused bodies up to this are drained */
#define HTTP_BODY_BUDGET ((size_t)64 << 20) /* body bytes held, all connections */
#define HTTP_BODY_TIMEOUT_MS 60000
#define HTTP_IDLE_TIMEOUT_S 30u      /* libmicrohttpd's, while answering */
#define HTTP_EVENT_THREADS 2u
#define HTTP_API_THREADS 4
#define HTTP_API_QUEUE_MAX 256       /* requests waiting for an API thread */
#define HTTP_REAP_EVERY_MS 250
#define HTTP_HOST_MAX 256

/* ------------------------------------------------------------ state */

enum rq_phase { RQ_ADMIT, RQ_BODY, RQ_QUEUED, RQ_DONE };

/* One request (libmicrohttpd's con_cls): created on the first call, freed
 * in on_completed. While RQ_QUEUED it belongs to the API thread that took
 * it; resuming the connection hands it back. */
struct req_state {
    struct req_state *next; /* API queue */
    struct MHD_Connection *conn;
    const char *url, *method; /* libmicrohttpd's, valid for the request */
    const struct http_route *route;
    const char *params[HTTP_MAX_PARAMS];
    int nparams;
    char *scratch; /* backs params */
    enum rq_phase phase;
    /* body */
    char *body;
    size_t len, cap, reserved; /* reserved: taken from the body budget */
    size_t seen;
    int want_json; /* a chunked body of unknown type: refused if non-empty */
    /* an answer decided before the body ended (0: none); the rest of the
     * body is read and dropped */
    int refuse_status;
    const char *refuse_retry;
    char refuse_msg[200];
    struct http_resp resp; /* the handler's answer, sent on resume */
};

/* Connection slot, for the reaper (libmicrohttpd's socket_context). */
enum { TR_HEADER, TR_BODY, TR_BUSY };
struct track {
    struct track *prev, *next;
    int fd;
    atomic_int_least64_t state; /* since_ms * 4 + TR_* */
};

static struct MHD_Daemon *http_daemon;
static const struct http_route *http_routes;
static const struct config *http_cfg;
static atomic_int http_bound_port;
static int http_listen_fd = -1; /* bound by http_listen, until the daemon takes it */
static char http_public_origin[300], http_public_host[HTTP_HOST_MAX];
static int64_t http_header_ms;

static atomic_size_t body_used; /* of HTTP_BODY_BUDGET */

static pthread_mutex_t track_mu = PTHREAD_MUTEX_INITIALIZER;
static struct track *track_head;

static pthread_mutex_t reap_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t reap_cv; /* monotonic (cond_init_monotonic), made once */
static pthread_once_t reap_once_init = PTHREAD_ONCE_INIT;
static int reap_stop, reap_running;
static pthread_t reap_thread;

static pthread_mutex_t api_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t api_cv = PTHREAD_COND_INITIALIZER;
static struct req_state *api_head, *api_tail;
static int api_len, api_stopping, api_nthreads;
static pthread_t api_threads[HTTP_API_THREADS];

/* libmicrohttpd logs a line per refused connection: under a flood that is
 * a line per attempt, so at most 10 per 10 s, with the count of the rest */
static struct rate_limit mhd_log_limit = RATE_LIMIT_INIT(10, 10000);

/* ------------------------------------------------------- pure helpers */

int http_match(const char *pattern, const char *path, char *scratch,
               const char **params, int *nparams)
{
    const char *p = pattern, *s = path;
    char *out = scratch;
    *nparams = 0;
    while (*p && *s) {
        if (p[0] == '{') {
            const char *close = strchr(p, '}');
            if (!close)
                return 0;
            const char *end = strchr(s, '/');
            size_t n = end ? (size_t)(end - s) : strlen(s);
            if (n == 0 || *nparams == HTTP_MAX_PARAMS)
                return 0;
            memcpy(out, s, n);
            out[n] = '\0';
            params[(*nparams)++] = out;
            out += n + 1;
            s += n;
            p = close + 1;
            continue;
        }
        if (*p != *s)
            return 0;
        p++;
        s++;
    }
    return *p == '\0' && *s == '\0';
}

int http_host_allowed(const char *host, const char *public_host)
{
    char name[HTTP_HOST_MAX];
    const char *port;
    size_t n;
    if (!*host)
        return 1; /* no authority given: nothing to rebind */
    if (host[0] == '[') {
        const char *close = strchr(host, ']');
        if (!close || (size_t)(close - host - 1) >= sizeof name)
            return 0;
        n = (size_t)(close - host - 1);
        memcpy(name, host + 1, n);
        name[n] = '\0';
        port = close + 1;
        struct in6_addr a6;
        if (inet_pton(AF_INET6, name, &a6) != 1)
            return 0;
    } else {
        const char *colon = strchr(host, ':');
        n = colon ? (size_t)(colon - host) : strlen(host);
        if (n == 0 || n >= sizeof name)
            return 0;
        memcpy(name, host, n);
        name[n] = '\0';
        port = host + n;
    }
    if (*port) {
        if (*port != ':' || !port[1])
            return 0;
        for (const char *d = port + 1; *d; d++)
            if (*d < '0' || *d > '9')
                return 0;
    }
    if (host[0] == '[')
        return 1;
    struct in_addr a4;
    if (inet_pton(AF_INET, name, &a4) == 1 || strcasecmp(name, "localhost") == 0)
        return 1;
    return public_host && *public_host && strcasecmp(name, public_host) == 0;
}

int http_is_json(const char *ct)
{
    static const char want[] = "application/json";
    if (!ct)
        return 0;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    if (strncasecmp(ct, want, sizeof want - 1) != 0)
        return 0;
    ct += sizeof want - 1;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    return *ct == '\0' || *ct == ';';
}

/* Splits an http(s) URL's authority: *https, host (lower case, IPv6 kept
 * in brackets) and port (the scheme's default when absent). 0 or -1. */
static int url_parts(const char *url, int *https, char *host, size_t host_cap,
                     long *port)
{
    const char *a;
    if (strncasecmp(url, "http://", 7) == 0) {
        *https = 0;
        a = url + 7;
    } else if (strncasecmp(url, "https://", 8) == 0) {
        *https = 1;
        a = url + 8;
    } else {
        return -1;
    }
    size_t alen = strcspn(a, "/?#");
    const char *at = memchr(a, '@', alen);
    if (at) { /* userinfo is not part of the origin */
        alen -= (size_t)(at + 1 - a);
        a = at + 1;
    }
    const char *hend;
    if (alen && a[0] == '[') {
        const char *close = memchr(a, ']', alen);
        if (!close)
            return -1;
        hend = close + 1;
    } else {
        const char *colon = memchr(a, ':', alen);
        hend = colon ? colon : a + alen;
    }
    size_t hl = (size_t)(hend - a);
    if (hl == 0 || hl >= host_cap)
        return -1;
    for (size_t i = 0; i < hl; i++)
        host[i] = (a[i] >= 'A' && a[i] <= 'Z') ? (char)(a[i] - 'A' + 'a') : a[i];
    host[hl] = '\0';
    *port = *https ? 443 : 80;
    if (hend < a + alen) { /* ":port" */
        char digits[8];
        size_t dl = (size_t)(a + alen - hend - 1);
        if (hend[0] != ':' || dl == 0 || dl >= sizeof digits)
            return -1;
        memcpy(digits, hend + 1, dl);
        digits[dl] = '\0';
        int64_t p;
        if (parse_i64(digits, &p) || p < 1 || p > 65535)
            return -1;
        *port = (long)p;
    }
    return 0;
}

int http_url_origin(const char *url, char *out, size_t cap, char *host_out,
                    size_t host_cap)
{
    char host[HTTP_HOST_MAX];
    int https;
    long port;
    if (url_parts(url, &https, host, sizeof host, &port))
        return -1;
    int n = port == (https ? 443 : 80)
                ? snprintf(out, cap, "%s://%s", https ? "https" : "http", host)
                : snprintf(out, cap, "%s://%s:%ld", https ? "https" : "http", host, port);
    if (n < 0 || (size_t)n >= cap)
        return -1;
    if (host_out && (size_t)snprintf(host_out, host_cap, "%s", host) >= host_cap)
        return -1;
    return 0;
}

int http_check_config(const struct config *cfg, struct cs_err *err)
{
    int loopback = 0;
    if (strcmp(cfg->listen_host, "*") != 0) {
        struct in_addr a;
        if (inet_pton(AF_INET, cfg->listen_host, &a) != 1)
            return cs_err_set(err, "listen: \"%s\" is not an IPv4 address",
                              cfg->listen_host);
        loopback = (ntohl(a.s_addr) >> 24) == 127;
    }
    if (!loopback && !cfg->api_token)
        return cs_err_set(err, "listen = \"%s\" is reachable from other machines "
                          "and api_token is not set: set api_token (every /v1 "
                          "request then needs it) or listen on 127.0.0.1",
                          cfg->listen);
    return 0;
}

/* ------------------------------------------------------------ answers */

const char *http_header(struct http_req *req, const char *name)
{
    return MHD_lookup_connection_value((struct MHD_Connection *)req->conn,
                                       MHD_HEADER_KIND, name);
}

const char *http_query(struct http_req *req, const char *name)
{
    return MHD_lookup_connection_value((struct MHD_Connection *)req->conn,
                                       MHD_GET_ARGUMENT_KIND, name);
}

static const char *status_code_word(int status)
{
    switch (status) {
    case 400: return "bad_request";
    case 401: return "unauthorized";
    case 403: return "forbidden";
    case 404: return "not_found";
    case 409: return "conflict";
    case 413: return "payload_too_large";
    case 415: return "unsupported_media_type";
    case 422: return "unprocessable";
    case 503: return "unavailable";
    default: return status >= 500 ? "internal" : "error";
    }
}

static void error_body(struct http_resp *resp, int status, const char *msg)
{
    resp->status = status;
    buf_reset(&resp->body);
    buf_printf(&resp->body, "{\"error\":{\"code\":\"%s\",\"message\":",
               status_code_word(status));
    buf_json_strz(&resp->body, msg);
    buf_puts(&resp->body, "}}");
}

void http_error(struct http_resp *resp, int status, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    error_body(resp, status, msg);
}

static enum MHD_Result send_resp(struct MHD_Connection *conn,
                                 struct http_resp *r)
{
    struct MHD_Response *mr = MHD_create_response_from_buffer(
        r->body.len, r->body.data ? r->body.data : (char *)"",
        MHD_RESPMEM_MUST_COPY);
    if (!mr)
        return MHD_NO;
    MHD_add_response_header(mr, MHD_HTTP_HEADER_CONTENT_TYPE,
                            r->content_type ? r->content_type
                                            : "application/json");
    if (r->retry_after)
        MHD_add_response_header(mr, MHD_HTTP_HEADER_RETRY_AFTER, r->retry_after);
    if (r->status == 401)
        MHD_add_response_header(mr, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                                "Bearer realm=\"calsync\"");
    if (r->set_cookie)
        MHD_add_response_header(mr, MHD_HTTP_HEADER_SET_COOKIE, r->set_cookie);
    if (r->location)
        MHD_add_response_header(mr, MHD_HTTP_HEADER_LOCATION, r->location);
    if (r->content_type && strncmp(r->content_type, "text/html", 9) == 0) {
        /* the status page: no script, no framing, nothing fetched from
         * elsewhere -- a title that escaped the escaping still runs nothing */
        MHD_add_response_header(mr, "Content-Security-Policy",
                                "default-src 'none'; style-src 'unsafe-inline'; "
                                "img-src 'self'; form-action 'self'; "
                                "frame-ancestors 'none'; base-uri 'none'");
        MHD_add_response_header(mr, "X-Content-Type-Options", "nosniff");
        MHD_add_response_header(mr, "Cache-Control", "no-store");
        MHD_add_response_header(mr, "Referrer-Policy", "no-referrer");
    }
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)r->status, mr);
    MHD_destroy_response(mr);
    return ret;
}

static int known_method(const char *m)
{
    static const char *const ms[] = {"GET", "POST", "PATCH", "PUT", "DELETE",
                                     "HEAD", "OPTIONS", NULL};
    for (int i = 0; ms[i]; i++)
        if (strcmp(m, ms[i]) == 0)
            return 1;
    return 0;
}

static void count(const char *route, const char *method, int status)
{
    char series[300];
    char m[16];
    metrics_label(known_method(method) ? method : "other", m, sizeof m);
    snprintf(series, sizeof series,
             "calsync_http_requests_total{route=\"%s\",method=\"%s\",status=\"%d\"}",
             route, m, status);
    metrics_inc(series);
}

static const char *route_name(const struct req_state *cs)
{
    return cs->route ? cs->route->pattern : "unmatched";
}

/* Answers cs's refusal on conn now. */
static enum MHD_Result send_error(struct MHD_Connection *conn,
                                  struct req_state *cs)
{
    struct http_resp r = {.retry_after = cs->refuse_retry};
    buf_init(&r.body);
    error_body(&r, cs->refuse_status, cs->refuse_msg);
    count(route_name(cs), cs->method, r.status);
    enum MHD_Result ret = send_resp(conn, &r);
    buf_free(&r.body);
    return ret;
}

/* --------------------------------------------------------------- body */

static int budget_take(size_t n)
{
    size_t cur = atomic_load(&body_used);
    do {
        if (n > HTTP_BODY_BUDGET - cur)
            return -1;
    } while (!atomic_compare_exchange_weak(&body_used, &cur, cur + n));
    return 0;
}

static void body_free(struct req_state *cs)
{
    free(cs->body);
    cs->body = NULL;
    cs->len = cs->cap = 0;
    if (cs->reserved)
        atomic_fetch_sub(&body_used, cs->reserved);
    cs->reserved = 0;
}

/* Appends n bytes (the caller keeps len + n <= HTTP_BODY_MAX). Growth is
 * taken from the budget before it is allocated. 0, or -1 when the budget
 * is spent or memory is out. */
static int body_append(struct req_state *cs, const char *p, size_t n)
{
    if (cs->len + n + 1 > cs->cap) {
        size_t want = cs->cap ? cs->cap * 2 : (cs->reserved ? cs->reserved : 4096);
        while (want < cs->len + n + 1)
            want *= 2;
        if (want > HTTP_BODY_MAX + 1)
            want = HTTP_BODY_MAX + 1;
        if (want > cs->reserved) {
            if (budget_take(want - cs->reserved))
                return -1;
            cs->reserved = want;
        }
        char *nb = realloc(cs->body, want);
        if (!nb)
            return -1;
        cs->body = nb;
        cs->cap = want;
    }
    memcpy(cs->body + cs->len, p, n);
    cs->len += n;
    cs->body[cs->len] = '\0';
    return 0;
}

/* ----------------------------------------------------------- admission */

static void track_set(struct MHD_Connection *conn, int phase)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    struct track *t = ci ? ci->socket_context : NULL;
    if (t)
        atomic_store(&t->state, time_mono_ms() * 4 + phase);
}

/* application/x-www-form-urlencoded, parameters allowed (HTTP_PAGE forms) */
static int is_form(const char *ct)
{
    static const char want[] = "application/x-www-form-urlencoded";
    if (!ct || strncasecmp(ct, want, sizeof want - 1) != 0)
        return 0;
    ct += sizeof want - 1;
    while (*ct == ' ')
        ct++;
    return *ct == '\0' || *ct == ';';
}

static int authorized(struct MHD_Connection *conn)
{
    const char *tok = http_cfg->api_token;
    if (!tok)
        return 1;
    const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return 0;
    h += 7;
    while (*h == ' ')
        h++;
    return secure_equal(h, strlen(h), tok, strlen(tok));
}

/* A browser's Origin: this service's public origin, or its listen
 * address (or localhost) on the bound port. */
static int origin_allowed(const char *origin)
{
    char norm[300], host[HTTP_HOST_MAX];
    int https;
    long port;
    if (http_url_origin(origin, norm, sizeof norm, NULL, 0) == 0 &&
        strcasecmp(norm, http_public_origin) == 0)
        return 1;
    if (url_parts(origin, &https, host, sizeof host, &port) || https ||
        port != atomic_load(&http_bound_port))
        return 0;
    struct in_addr a;
    if (strcmp(host, "localhost") == 0 ||
        (inet_pton(AF_INET, host, &a) == 1 && (ntohl(a.s_addr) >> 24) == 127))
        return 1;
    return strcmp(http_cfg->listen_host, "*") != 0 &&
           strcmp(host, http_cfg->listen_host) == 0;
}

static void refuse(struct req_state *cs, int status, const char *retry,
                   const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Decides the answer before the body ended; what still arrives is read
 * and dropped. */
static void refuse(struct req_state *cs, int status, const char *retry,
                   const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cs->refuse_msg, sizeof cs->refuse_msg, fmt, ap);
    va_end(ap);
    cs->refuse_status = status;
    cs->refuse_retry = retry;
    body_free(cs);
}

/* The first call: headers complete, no body read. Routes, checks Host,
 * Origin, the token and the body's declared size and type; refuses now or
 * after draining a small body, or lets the body come. */
static enum MHD_Result admit(struct MHD_Connection *conn, struct req_state *cs)
{
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_LENGTH);
    const char *te = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_TRANSFER_ENCODING);
    const char *host = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                   MHD_HTTP_HEADER_HOST);
    const char *origin = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_ORIGIN);
    const char *ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_TYPE);
    int64_t declared = 0;
    if (!cl || parse_i64(cl, &declared) || declared < 0)
        declared = 0;
    int has_body = te != NULL || declared > 0;

    size_t ulen = strlen(cs->url);
    cs->scratch = malloc(ulen + 1);
    if (!cs->scratch)
        return MHD_NO;
    const struct http_route *hit = NULL;
    int path_known = 0, path_auth = 0;
    for (const struct http_route *r = http_routes; r->method && !hit; r++) {
        if (http_match(r->pattern, cs->url, cs->scratch, cs->params, &cs->nparams)) {
            path_known = 1;
            path_auth |= r->flags & HTTP_AUTH;
            if (strcmp(r->method, cs->method) == 0)
                hit = r;
        }
    }
    /* only a matched route names a metrics series: probing cannot add any */
    cs->route = hit;
    /* the API's paths, whatever the method: token and Host. The public
     * routes (push, health, metrics) are reachable without a token anyway,
     * and a push must not be lost to a proxy that rewrites Host. */
    int need_auth = hit ? (hit->flags & HTTP_AUTH) != 0 : path_auth;
    int page = hit && (hit->flags & HTTP_PAGE);

    if (declared > (int64_t)HTTP_DRAIN_MAX)
        refuse(cs, 413, NULL, "request body larger than %u bytes", HTTP_BODY_MAX);
    else if (host && (need_auth || page) && !http_host_allowed(host, http_public_host))
        refuse(cs, 400, NULL, "Host does not name this service (use its address, "
               "localhost or the host of public_url)");
    else if (origin && !origin_allowed(origin))
        refuse(cs, 403, NULL, "cross-origin requests are refused");
    else if (!path_known)
        refuse(cs, 404, NULL, "no such endpoint: %s", cs->url);
    else if (need_auth && !authorized(conn))
        refuse(cs, 401, NULL, "missing or wrong bearer token");
    else if (!hit)
        refuse(cs, 404, NULL, "no %s on %s",
               known_method(cs->method) ? cs->method : "such method", cs->url);
    else if (page && has_body && (te || declared > (int64_t)HTTP_FORM_MAX))
        refuse(cs, 413, NULL, "a form body must have a Content-Length of at most %d bytes",
               HTTP_FORM_MAX);
    else if (page && has_body && !is_form(ct))
        refuse(cs, 415, NULL, "a form body must be application/x-www-form-urlencoded");
    else if (has_body && !(hit->flags & (HTTP_AUTH | HTTP_PUSH_BODY)) && !page)
        refuse(cs, 413, NULL, "%s takes no request body", hit->pattern);
    else if (!(hit->flags & HTTP_AUTH) && declared > (int64_t)HTTP_PUSH_BODY_MAX)
        refuse(cs, 413, NULL, "request body larger than %u bytes", HTTP_PUSH_BODY_MAX);
    else if (declared > (int64_t)HTTP_BODY_MAX)
        refuse(cs, 413, NULL, "request body larger than %u bytes", HTTP_BODY_MAX);
    else if (has_body && !page && !http_is_json(ct) && declared > 0)
        refuse(cs, 415, NULL, "a request body must be Content-Type: application/json");
    else if (declared > 0 && budget_take((size_t)declared + 1))
        refuse(cs, 503, "1", "too many request bodies in flight; retry");
    else if (declared > 0)
        cs->reserved = (size_t)declared + 1;
    else if (te && !http_is_json(ct))
        cs->want_json = 1; /* refused at its first byte: an empty one passes */

    cs->phase = RQ_BODY;
    track_set(conn, TR_BODY);
    if (!cs->refuse_status)
        return MHD_YES;
    /* a small body is read and dropped, so the client reads the answer; a
     * large or unbounded one is not read at all (an authorised body over
     * 1 MiB is the exception: drained, as ordinary clients expect) */
    int authorised_large = cs->refuse_status == 413 && hit &&
                           (hit->flags & HTTP_AUTH) && declared <= (int64_t)HTTP_DRAIN_MAX;
    int drain = te == NULL && (declared <= (int64_t)HTTP_DRAIN_SMALL || authorised_large);
    if (drain)
        return MHD_YES;
    cs->phase = RQ_DONE;
    return send_error(conn, cs);
}

/* Body bytes: stored, or dropped once the answer is decided. */
static enum MHD_Result take_body(struct req_state *cs, const char *data, size_t n)
{
    cs->seen += n;
    if (cs->seen > HTTP_DRAIN_MAX)
        return MHD_NO; /* endless chunked body: drop the connection */
    if (cs->refuse_status) {
        /* "over 1 MiB -> 413" holds whatever else is wrong with the body */
        if (cs->refuse_status == 415 && cs->seen > HTTP_BODY_MAX)
            refuse(cs, 413, NULL, "request body larger than %u bytes", HTTP_BODY_MAX);
        return MHD_YES;
    }
    if (cs->want_json)
        refuse(cs, 415, NULL, "a request body must be Content-Type: application/json");
    else if (cs->route && !(cs->route->flags & HTTP_AUTH) && cs->seen > HTTP_PUSH_BODY_MAX)
        refuse(cs, 413, NULL, "request body larger than %u bytes", HTTP_PUSH_BODY_MAX);
    else if (cs->seen > HTTP_BODY_MAX)
        refuse(cs, 413, NULL, "request body larger than %u bytes", HTTP_BODY_MAX);
    else if (body_append(cs, data, n))
        refuse(cs, 503, "1", "too many request bodies in flight; retry");
    return MHD_YES;
}

/* ---------------------------------------------------------- handlers */

/* Runs cs's handler (on whichever thread) into cs->resp; frees the body. */
static void run_handler(struct req_state *cs)
{
    struct http_req req = {.conn = (struct http_conn *)cs->conn,
                           .method = cs->method,
                           .path = cs->url,
                           .nparams = cs->nparams,
                           .body = cs->body ? cs->body : "",
                           .body_len = cs->len};
    memcpy(req.params, cs->params, sizeof req.params);
    cs->resp = (struct http_resp){.status = 200};
    buf_init(&cs->resp.body);
    cs->route->fn(&req, &cs->resp);
    count(cs->route->pattern, cs->method, cs->resp.status);
    body_free(cs);
}

static enum MHD_Result send_handler_resp(struct MHD_Connection *conn,
                                         struct req_state *cs)
{
    enum MHD_Result ret = send_resp(conn, &cs->resp);
    buf_free(&cs->resp.body);
    return ret;
}

/* Hands cs to the API pool: the connection is suspended until an API
 * thread has the answer. Refused (503) when the pool is stopping or its
 * queue is full: a client must not be able to queue without bound. */
static enum MHD_Result to_api_pool(struct MHD_Connection *conn, struct req_state *cs)
{
    pthread_mutex_lock(&api_mu);
    if (api_stopping || api_nthreads == 0 || api_len >= HTTP_API_QUEUE_MAX) {
        pthread_mutex_unlock(&api_mu);
        refuse(cs, 503, "1", "server busy; retry");
        cs->phase = RQ_DONE;
        return send_error(conn, cs);
    }
    /* suspended under api_mu, so no API thread can resume it first */
    MHD_suspend_connection(conn);
    cs->phase = RQ_QUEUED;
    cs->next = NULL;
    if (api_tail)
        api_tail->next = cs;
    else
        api_head = cs;
    api_tail = cs;
    api_len++;
    pthread_cond_signal(&api_cv);
    pthread_mutex_unlock(&api_mu);
    return MHD_YES;
}

static void *api_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&api_mu);
    for (;;) {
        while (!api_head && !api_stopping)
            pthread_cond_wait(&api_cv, &api_mu);
        if (!api_head)
            break; /* stopping, and nothing left */
        struct req_state *cs = api_head;
        api_head = cs->next;
        if (!api_head)
            api_tail = NULL;
        api_len--;
        pthread_mutex_unlock(&api_mu);
        run_handler(cs);
        struct MHD_Connection *conn = cs->conn;
        cs->phase = RQ_DONE;
        /* from here cs belongs to the event thread again (the resume is
         * a mutex hand-off in libmicrohttpd) */
        MHD_resume_connection(conn);
        pthread_mutex_lock(&api_mu);
    }
    pthread_mutex_unlock(&api_mu);
    return NULL;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
                                  const char *url, const char *method,
                                  const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    (void)cls;
    (void)version;
    struct req_state *cs = *con_cls;
    if (!cs) {
        cs = calloc(1, sizeof *cs);
        if (!cs)
            return MHD_NO;
        cs->conn = conn;
        cs->url = url;
        cs->method = method;
        *con_cls = cs;
        return admit(conn, cs);
    }
    if (*upload_size) {
        enum MHD_Result r = take_body(cs, upload, *upload_size);
        *upload_size = 0;
        return r;
    }
    switch (cs->phase) {
    case RQ_DONE: /* resumed: the API thread's answer */
        return send_handler_resp(conn, cs);
    case RQ_QUEUED:
        return MHD_YES; /* not ours to answer yet */
    case RQ_ADMIT:
    case RQ_BODY:
        break;
    }
    track_set(conn, TR_BUSY);
    if (cs->refuse_status) {
        cs->phase = RQ_DONE;
        return send_error(conn, cs);
    }
    if (cs->route->flags & HTTP_INLINE) {
        run_handler(cs);
        cs->phase = RQ_DONE;
        return send_handler_resp(conn, cs);
    }
    return to_api_pool(conn, cs);
}

static void on_completed(void *cls, struct MHD_Connection *conn,
                         void **con_cls, enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)toe;
    struct req_state *cs = *con_cls;
    if (cs) {
        body_free(cs);
        buf_free(&cs->resp.body);
        free(cs->scratch);
        free(cs);
        *con_cls = NULL;
    }
    /* the connection now waits for its next request's header */
    track_set(conn, TR_HEADER);
}

/* ------------------------------------------------------------ reaper */

static void on_connection(void *cls, struct MHD_Connection *conn,
                          void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    (void)cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        struct track *t = ci ? calloc(1, sizeof *t) : NULL;
        if (!t)
            return; /* not reaped: libmicrohttpd's idle timeout still applies */
        t->fd = ci->connect_fd;
        atomic_init(&t->state, time_mono_ms() * 4 + TR_HEADER);
        pthread_mutex_lock(&track_mu);
        t->next = track_head;
        if (track_head)
            track_head->prev = t;
        track_head = t;
        pthread_mutex_unlock(&track_mu);
        *socket_context = t;
        return;
    }
    /* closed: libmicrohttpd closes the descriptor only after this returns,
     * so the reaper (under track_mu) never shuts down a reused one */
    struct track *t = *socket_context;
    if (!t)
        return;
    pthread_mutex_lock(&track_mu);
    if (t->prev)
        t->prev->next = t->next;
    else
        track_head = t->next;
    if (t->next)
        t->next->prev = t->prev;
    pthread_mutex_unlock(&track_mu);
    free(t);
    *socket_context = NULL;
}

static void reap_cv_init(void)
{
    cond_init_monotonic(&reap_cv); /* cannot fail with a valid attribute */
}

static void reap_once(void)
{
    int64_t now = time_mono_ms();
    long headers = 0, bodies = 0;
    pthread_mutex_lock(&track_mu);
    for (struct track *t = track_head; t; t = t->next) {
        int64_t st = atomic_load(&t->state);
        int phase = (int)(st & 3);
        int64_t since = st >> 2;
        if ((phase == TR_HEADER && now - since > http_header_ms) ||
            (phase == TR_BODY && now - since > HTTP_BODY_TIMEOUT_MS)) {
            shutdown(t->fd, SHUT_RDWR);
            atomic_store(&t->state, now * 4 + TR_BUSY);
            if (phase == TR_HEADER)
                headers++;
            else
                bodies++;
        }
    }
    pthread_mutex_unlock(&track_mu);
    if (headers)
        metrics_add("calsync_http_timeouts_total{phase=\"header\"}", headers);
    if (bodies)
        metrics_add("calsync_http_timeouts_total{phase=\"body\"}", bodies);
}

static void *reap_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&reap_mu);
    while (!reap_stop) {
        cond_wait_ms(&reap_cv, &reap_mu, HTTP_REAP_EVERY_MS);
        if (reap_stop)
            break;
        pthread_mutex_unlock(&reap_mu);
        reap_once();
        pthread_mutex_lock(&reap_mu);
    }
    pthread_mutex_unlock(&reap_mu);
    return NULL;
}

/* ------------------------------------------------------------- server */

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    long suppressed = 0;
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    if (strncmp(msg, "Server reached connection limit", 31) == 0)
        metrics_inc("calsync_http_connections_refused_total");
    if (rate_limit_take(&mhd_log_limit, time_mono_ms(), &suppressed))
        log_warn("http.mhd", "msg=%s suppressed=%ld", log_q(msg), suppressed);
}

/* Stops the API threads once they have answered what is queued. After
 * this, no connection is suspended (libmicrohttpd refuses to stop with
 * one), and new requests are answered 503 on the event threads. */
static void api_pool_stop(void)
{
    pthread_mutex_lock(&api_mu);
    api_stopping = 1;
    pthread_cond_broadcast(&api_cv);
    int n = api_nthreads;
    pthread_mutex_unlock(&api_mu);
    for (int i = 0; i < n; i++)
        pthread_join(api_threads[i], NULL);
    pthread_mutex_lock(&api_mu);
    api_nthreads = 0;
    pthread_mutex_unlock(&api_mu);
}

static void reaper_stop(void)
{
    pthread_mutex_lock(&reap_mu);
    reap_stop = 1;
    pthread_cond_broadcast(&reap_cv);
    pthread_mutex_unlock(&reap_mu);
    if (reap_running)
        pthread_join(reap_thread, NULL);
    reap_running = 0;
}

/* Binds and listens on sa ourselves rather than letting libmicrohttpd do
 * it, for two reasons: the error names the cause (errno), and the socket
 * gets SO_REUSEADDR only (restart over TIME_WAIT), never SO_REUSEPORT,
 * which would let a second service share the port and split the requests
 * between two unrelated processes (DESIGN §2 Instances). Returns the
 * socket (owned by the caller until handed to the daemon) or -1, err set. */
static int listen_socket(const struct config *cfg, const struct sockaddr_in *sa,
                         struct cs_err *err)
{
    int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return cs_err_set(err, "listen %s: socket: %s", cfg->listen, strerror(errno));
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (const struct sockaddr *)sa, sizeof *sa) != 0 ||
        listen(fd, SOMAXCONN) != 0) {
        int e = errno;
        close(fd);
        if (e == EADDRINUSE)
            return cs_err_set(err, "listen %s: port %d is already in use "
                              "(another calsync or another program listens "
                              "there)", cfg->listen, cfg->listen_port);
        return cs_err_set(err, "listen %s: %s", cfg->listen, strerror(e));
    }
    return fd;
}

int http_listen(const struct config *cfg, struct cs_err *err)
{
    struct sockaddr_in sa;
    if (http_listen_fd >= 0)
        return 0;
    if (http_check_config(cfg, err))
        return -1;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)cfg->listen_port);
    if (strcmp(cfg->listen_host, "*") == 0)
        sa.sin_addr.s_addr = htonl(INADDR_ANY);
    else
        inet_pton(AF_INET, cfg->listen_host, &sa.sin_addr); /* checked above */
    int fd = listen_socket(cfg, &sa, err);
    if (fd < 0)
        return -1;
    struct sockaddr_in bound;
    socklen_t blen = sizeof bound;
    atomic_store(&http_bound_port, getsockname(fd, (struct sockaddr *)&bound, &blen) == 0
                                       ? ntohs(bound.sin_port)
                                       : cfg->listen_port);
    http_listen_fd = fd;
    return 0;
}

int http_start(const struct config *cfg, const struct http_route *routes,
               struct cs_err *err)
{
    if (http_url_origin(cfg->public_url, http_public_origin, sizeof http_public_origin,
                        http_public_host, sizeof http_public_host))
        return cs_err_set(err, "public_url: \"%s\" has no usable host", cfg->public_url);
    if (http_listen(cfg, err))
        return -1;
    http_routes = routes;
    http_cfg = cfg;
    http_header_ms = cfg->http.header_timeout * 1000;

    pthread_mutex_lock(&api_mu);
    api_stopping = 0;
    for (api_nthreads = 0; api_nthreads < HTTP_API_THREADS; api_nthreads++)
        if (pthread_create(&api_threads[api_nthreads], NULL, api_main, NULL) != 0)
            break;
    int started = api_nthreads;
    pthread_mutex_unlock(&api_mu);
    pthread_once(&reap_once_init, reap_cv_init);
    reap_stop = 0;
    reap_running = pthread_create(&reap_thread, NULL, reap_main, NULL) == 0;
    if (started == 0 || !reap_running) {
        cs_err_set(err, "cannot start the HTTP threads");
        goto fail;
    }
    http_daemon = MHD_start_daemon(
        MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG | MHD_ALLOW_SUSPEND_RESUME,
        0, NULL, NULL, on_request, NULL,
        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL,
        MHD_OPTION_LISTEN_SOCKET, http_listen_fd,
        MHD_OPTION_THREAD_POOL_SIZE, HTTP_EVENT_THREADS,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->http.connections,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)cfg->http.connections_per_ip,
        MHD_OPTION_CONNECTION_TIMEOUT, HTTP_IDLE_TIMEOUT_S,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, NULL,
        MHD_OPTION_END);
    if (!http_daemon) {
        cs_err_set(err, "listen %s: the HTTP server did not start "
                   "(see the http.mhd log line)", cfg->listen);
        goto fail;
    }
    http_listen_fd = -1; /* the daemon owns it now and closes it when stopped */
    return 0;
fail:
    api_pool_stop();
    reaper_stop();
    return -1; /* the socket, if bound, stays for http_stop() to close */
}

int http_port(void)
{
    return atomic_load(&http_bound_port);
}

void http_stop(void)
{
    if (http_daemon) {
        /* API threads first: they answer what they hold and resume those
         * connections; libmicrohttpd aborts if stopped with one suspended */
        api_pool_stop();
        MHD_stop_daemon(http_daemon);
        http_daemon = NULL;
        reaper_stop();
    }
    if (http_listen_fd >= 0) {
        close(http_listen_fd);
        http_listen_fd = -1;
    }
}
