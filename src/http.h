/* http.h -- the HTTP server (libmicrohttpd): admission, routing, bodies,
 * auth, errors.
 *
 * Requests are routed on method + path pattern ("/v1/bookings/{uid}/audit";
 * a `{name}` segment captures one path segment). Everything that can be
 * decided from the request line and headers is decided on libmicrohttpd's
 * first call, before a byte of body is read: Host and Origin, the route,
 * the bearer token (routes marked `auth`), the body's declared size and
 * Content-Type. A refused request is never buffered. Bodies are collected
 * up to HTTP_BODY_MAX (larger ones are answered 413 and never reach a
 * handler), within a budget shared by all connections.
 *
 * Threads: libmicrohttpd's event threads read and write sockets and run
 * only HTTP_INLINE handlers; every other handler runs on the API pool, so
 * a handler that waits for SQLite's write lock never delays the answer to
 * another connection (DESIGN §2 Intake: the answer never waits).
 * Every answer is counted in calsync_http_requests_total{route,method,status}.
 * See docs/internals/http.md.
 */
#ifndef CALSYNC_HTTP_H
#define CALSYNC_HTTP_H

#include "config.h"
#include "util.h"

#include <stddef.h>

#define HTTP_BODY_MAX (1u << 20)
#define HTTP_MAX_PARAMS 4

struct http_conn; /* opaque: the libmicrohttpd connection */

struct http_req {
    struct http_conn *conn;
    const char *method;
    const char *path;
    const char *params[HTTP_MAX_PARAMS]; /* captured {name} segments, decoded */
    int nparams;
    const char *body;   /* NUL-terminated; "" when empty */
    size_t body_len;
};

struct http_resp {
    int status;
    struct buf body;          /* owned; freed by the server */
    const char *content_type; /* default application/json */
    const char *retry_after;  /* optional Retry-After value */
    /* HTTP_PAGE routes only (the status page): optional Set-Cookie and
     * Location values; must outlive the answer (static strings) */
    const char *set_cookie;
    const char *location;
};

typedef void (*http_handler)(struct http_req *req, struct http_resp *resp);

/* Route flags. HTTP_AUTH is 1 so that a table written as
 * {method, pattern, fn, 1} means "needs the token". */
enum {
    /* Needs `Authorization: Bearer <api_token>` when api_token is set,
     * and a Host that names this service (DNS rebinding). Routes without
     * it take no request body (413): an unauthenticated client never gets
     * memory for one. */
    HTTP_AUTH = 1,
    /* The handler never blocks (no SQLite write, no wait on anything a
     * writer holds): it runs on the event thread that read the request,
     * without a hand-off. Only Google's push intake is inline. */
    HTTP_INLINE = 2,
    /* An unauthenticated route that takes a body of at most
     * HTTP_PUSH_BODY_MAX bytes (a provider's push batch: Graph's
     * notifications are JSON); larger ones are refused 413 unread. */
    HTTP_PUSH_BODY = 4,
    /* A page for a browser (the status page, docs/operations.md): the Host
     * is checked as for HTTP_AUTH, but the handler authorizes the request
     * itself (bearer token or the status cookie), and a body may only be a
     * small form (application/x-www-form-urlencoded, at most
     * HTTP_FORM_MAX bytes, with a Content-Length). Its HTML answers carry
     * a Content-Security-Policy that allows no script at all. */
    HTTP_PAGE = 8,
};
#define HTTP_FORM_MAX 4096
#define HTTP_PUSH_BODY_MAX (64u * 1024)

struct http_route {
    const char *method;
    const char *pattern;
    http_handler fn;
    int flags; /* HTTP_AUTH | HTTP_INLINE */
};

/* Refuses a configuration that would serve the API unauthenticated beyond
 * this machine: a `listen` address outside 127.0.0.0/8 without api_token.
 * Also checks that `listen` is an IPv4 address or "*". 0, or -1 with err
 * set. Pure. */
int http_check_config(const struct config *cfg, struct cs_err *err);

/* Binds and listens on cfg->listen without serving yet, so that `serve`
 * fails on a port in use before it starts any other work (DESIGN §2
 * Instances); connections wait in the backlog until http_start. No
 * SO_REUSEPORT: a busy port is an error naming it. Checks cfg with
 * http_check_config first. 0, or -1 with err set. The socket is closed by
 * http_stop() if http_start() never takes it. */
int http_listen(const struct config *cfg, struct cs_err *err);

/* Starts serving `routes` (terminated by a NULL method; must outlive the
 * server) on cfg->listen (cfg must outlive the server too), listening
 * first if http_listen() has not. Returns 0, or -1 with err set. The
 * bound port (useful with port 0) is returned by http_port(). */
int http_start(const struct config *cfg, const struct http_route *routes,
               struct cs_err *err);
int http_port(void);
/* Stops accepting, lets the API pool answer what it holds, stops the
 * server and frees everything (also a socket bound by http_listen and
 * never served). Safe to call again. */
void http_stop(void);

/* Header and query lookups (case-insensitive header names). NULL if absent.
 * Strings belong to the connection: valid during the handler only. */
const char *http_header(struct http_req *req, const char *name);
const char *http_query(struct http_req *req, const char *name);

/* Fills resp with the contract error body
 * {"error":{"code":CODE,"message":MSG}}; code is derived from status. */
void http_error(struct http_resp *resp, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Matches path against pattern, capturing {name} segments into params
 * (pointers into scratch, which must hold strlen(path)+1 bytes). Returns 1
 * on match. Pure; exposed for unit tests. */
int http_match(const char *pattern, const char *path, char *scratch,
               const char **params, int *nparams);

/* 1 when a Host header value may name this service: an IP literal
 * (IPv4, or IPv6 in brackets), "localhost", or public_host (compared
 * without case); the port is not compared. A DNS-rebinding page reaches
 * the service under the attacker's own name, which is none of these.
 * Pure; for unit tests. */
int http_host_allowed(const char *host, const char *public_host);

/* 1 when a Content-Type value is application/json (any case, parameters
 * such as "; charset=utf-8" allowed). Pure; for unit tests. */
int http_is_json(const char *content_type);

/* The origin of an http(s) URL as a browser serialises it in `Origin`:
 * lower-case scheme and host, the port only when not the scheme's default,
 * no path ("https://calsync.example.com"). Its host alone (lower case,
 * IPv6 without brackets kept in brackets) goes to host_out when not NULL.
 * 0, or -1 when url is not http(s) or does not fit. Pure; for unit tests. */
int http_url_origin(const char *url, char *out, size_t cap, char *host_out,
                    size_t host_cap);

#endif
