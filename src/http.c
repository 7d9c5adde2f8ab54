/* http.c -- libmicrohttpd server: body collection, routing, auth, metrics.
 *
 * Threading: libmicrohttpd's internal thread pool (one epoll loop per
 * thread). Handlers run on those threads and must not block on Google:
 * they only touch the local database (each thread has its own connection,
 * see store.h) and in-memory state.
 *
 * Bodies: a declared Content-Length over HTTP_BODY_MAX is answered 413 at
 * once when it is absurd (> HTTP_DRAIN_MAX: the connection is closed), and
 * otherwise drained and discarded before answering 413, so ordinary clients
 * read the error instead of a reset connection. Nothing over the limit is
 * ever kept in memory or handed to a handler.
 */
#include "http.h"

#include "log.h"
#include "metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define HTTP_DRAIN_MAX (8u << 20)

struct conn_state {
    struct buf body;
    size_t seen;
    int too_large;
};

static struct MHD_Daemon *http_daemon;
static const struct http_route *http_routes;
static const struct config *http_cfg;
static int http_bound_port;
static int http_listen_fd = -1; /* bound by http_listen, until the daemon takes it */

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
    case 404: return "not_found";
    case 409: return "conflict";
    case 413: return "payload_too_large";
    case 422: return "unprocessable";
    case 503: return "unavailable";
    default: return status >= 500 ? "internal" : "error";
    }
}

void http_error(struct http_resp *resp, int status, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    resp->status = status;
    buf_reset(&resp->body);
    buf_printf(&resp->body, "{\"error\":{\"code\":\"%s\",\"message\":",
               status_code_word(status));
    buf_json_strz(&resp->body, msg);
    buf_puts(&resp->body, "}}");
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
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)r->status, mr);
    MHD_destroy_response(mr);
    return ret;
}

static void count(const char *route, const char *method, int status)
{
    char series[300];
    char m[16];
    metrics_label(method, m, sizeof m);
    snprintf(series, sizeof series,
             "calsync_http_requests_total{route=\"%s\",method=\"%s\",status=\"%d\"}",
             route, m, status);
    metrics_inc(series);
}

static int authorized(struct http_req *req)
{
    const char *tok = http_cfg->api_token;
    if (!tok)
        return 1;
    const char *h = http_header(req, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return 0;
    h += 7;
    while (*h == ' ')
        h++;
    return secure_equal(h, strlen(h), tok, strlen(tok));
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

static enum MHD_Result dispatch(struct MHD_Connection *conn, const char *url,
                                const char *method, struct conn_state *cs)
{
    struct http_resp resp = {.status = 200};
    buf_init(&resp.body);
    struct http_req req = {.conn = (struct http_conn *)conn,
                           .method = method,
                           .path = url,
                           .body = cs->body.data ? cs->body.data : "",
                           .body_len = cs->body.len};
    size_t ulen = strlen(url);
    char *scratch = malloc(ulen + 1);
    const char *route_name = "unmatched";
    const struct http_route *hit = NULL;
    int path_known = 0;

    if (!scratch) {
        http_error(&resp, 503, "out of memory");
        goto answer;
    }
    for (const struct http_route *r = http_routes; r->method; r++) {
        if (http_match(r->pattern, url, scratch, req.params, &req.nparams)) {
            path_known = 1;
            if (strcmp(r->method, method) == 0) {
                hit = r;
                break;
            }
        }
    }
    if (cs->too_large) {
        route_name = hit ? hit->pattern : route_name;
        http_error(&resp, 413, "request body larger than %u bytes", HTTP_BODY_MAX);
    } else if (!hit) {
        if (path_known)
            http_error(&resp, 404, "no %s on %s", known_method(method) ? method : "such method", url);
        else
            http_error(&resp, 404, "no such endpoint: %s", url);
    } else {
        route_name = hit->pattern;
        if (hit->auth && !authorized(&req)) {
            http_error(&resp, 401, "missing or wrong bearer token");
        } else {
            hit->fn(&req, &resp);
        }
    }
answer:
    count(route_name, known_method(method) ? method : "other", resp.status);
    enum MHD_Result ret = send_resp(conn, &resp);
    buf_free(&resp.body);
    free(scratch);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
                                  const char *url, const char *method,
                                  const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    (void)cls;
    (void)version;
    struct conn_state *cs = *con_cls;
    if (!cs) {
        cs = calloc(1, sizeof *cs);
        if (!cs)
            return MHD_NO;
        buf_init(&cs->body);
        *con_cls = cs;
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_CONTENT_LENGTH);
        int64_t declared;
        if (cl && parse_i64(cl, &declared) == 0 && declared > (int64_t)HTTP_BODY_MAX) {
            cs->too_large = 1;
            if (declared > (int64_t)HTTP_DRAIN_MAX) {
                struct http_resp r = {.status = 413};
                buf_init(&r.body);
                http_error(&r, 413, "request body larger than %u bytes", HTTP_BODY_MAX);
                count("unmatched", known_method(method) ? method : "other", 413);
                enum MHD_Result ret = send_resp(conn, &r);
                buf_free(&r.body);
                return ret;
            }
        }
        return MHD_YES;
    }
    if (*upload_size) {
        cs->seen += *upload_size;
        if (cs->seen > HTTP_BODY_MAX)
            cs->too_large = 1;
        if (cs->seen > HTTP_DRAIN_MAX)
            return MHD_NO; /* endless chunked body: drop the connection */
        if (!cs->too_large && buf_append(&cs->body, upload, *upload_size))
            return MHD_NO;
        *upload_size = 0;
        return MHD_YES;
    }
    return dispatch(conn, url, method, cs);
}

static void on_completed(void *cls, struct MHD_Connection *conn,
                         void **con_cls, enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    struct conn_state *cs = *con_cls;
    if (cs) {
        buf_free(&cs->body);
        free(cs);
        *con_cls = NULL;
    }
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    log_warn("http.mhd", "msg=%s", log_q(msg));
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
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)cfg->listen_port);
    if (strcmp(cfg->listen_host, "*") == 0)
        sa.sin_addr.s_addr = htonl(INADDR_ANY);
    else if (inet_pton(AF_INET, cfg->listen_host, &sa.sin_addr) != 1)
        return cs_err_set(err, "listen: \"%s\" is not an IPv4 address",
                          cfg->listen_host);
    int fd = listen_socket(cfg, &sa, err);
    if (fd < 0)
        return -1;
    struct sockaddr_in bound;
    socklen_t blen = sizeof bound;
    http_bound_port = getsockname(fd, (struct sockaddr *)&bound, &blen) == 0
                          ? ntohs(bound.sin_port)
                          : cfg->listen_port;
    http_listen_fd = fd;
    return 0;
}

int http_start(const struct config *cfg, const struct http_route *routes,
               struct cs_err *err)
{
    if (http_listen(cfg, err))
        return -1;
    http_routes = routes;
    http_cfg = cfg;
    unsigned pool = 2;
    http_daemon = MHD_start_daemon(
        MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL,
        on_request, NULL,
        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL,
        MHD_OPTION_LISTEN_SOCKET, http_listen_fd,
        MHD_OPTION_THREAD_POOL_SIZE, pool,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)2048,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
        MHD_OPTION_END);
    if (!http_daemon)
        return cs_err_set(err, "listen %s: the HTTP server did not start "
                          "(see the http.mhd log line)", cfg->listen);
    http_listen_fd = -1; /* the daemon owns it now and closes it when stopped */
    return 0;
}

int http_port(void)
{
    return http_bound_port;
}

void http_stop(void)
{
    if (http_daemon) {
        MHD_stop_daemon(http_daemon);
        http_daemon = NULL;
    }
    if (http_listen_fd >= 0) {
        close(http_listen_fd);
        http_listen_fd = -1;
    }
}
