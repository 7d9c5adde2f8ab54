/* http.h -- the HTTP server (libmicrohttpd): routing, bodies, auth, errors.
 *
 * Requests are routed on method + path pattern ("/v1/bookings/{uid}/audit";
 * a `{name}` segment captures one path segment). Bodies are collected up to HTTP_BODY_MAX;
 * larger ones are answered 413 and never reach a handler. Routes marked
 * `auth` need `Authorization: Bearer <api_token>` when a token is set.
 * Every answer is counted in calsync_http_requests_total{route,method,status}.
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
};

typedef void (*http_handler)(struct http_req *req, struct http_resp *resp);

struct http_route {
    const char *method;
    const char *pattern;
    http_handler fn;
    int auth;
};

/* Binds and listens on cfg->listen without serving yet, so that `serve`
 * fails on a port in use before it starts any other work (DESIGN §2
 * Instances); connections wait in the backlog until http_start. No
 * SO_REUSEPORT: a busy port is an error naming it. 0, or -1 with err set.
 * The socket is closed by http_stop() if http_start() never takes it. */
int http_listen(const struct config *cfg, struct cs_err *err);

/* Starts serving `routes` (terminated by a NULL method; must outlive the
 * server) on cfg->listen. Returns 0, or -1 with err set. The bound port
 * (useful with port 0) is returned by http_port(). */
int http_start(const struct config *cfg, const struct http_route *routes,
               struct cs_err *err);
int http_port(void);
/* Stops accepting, waits for in-flight requests, frees everything
 * (also a socket bound by http_listen and never served). */
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

#endif
