/* phttp.h -- the HTTP exchange every HTTP calendar provider shares
 * (Google, Microsoft Graph; CalDAV next): one libcurl exchange, the retry
 * loop of DESIGN §2, and the authenticated call with its one token refresh
 * after a 401. Only src/provider/ includes this header; the engine sees
 * provider.h. docs/internals/provider.md "The shared HTTP exchange" says
 * how a provider plugs in.
 *
 * What is the same for every provider lives here:
 *   - one CURL easy handle per thread (created on first use, released when
 *     the thread exits or calls phttp_thread_release()), so a worker reuses
 *     its connections across calls, whichever provider they go to;
 *   - bounded response bodies (PHTTP_MAX_RESPONSE), connect and total
 *     timeouts, no redirects, http/https only, the path sent as built;
 *   - retries of what the provider calls transient (its `retryable` hook)
 *     and of connection-level failures, waiting Retry-After exactly when
 *     given and otherwise util.c's backoff_ms (1 s doubling up to 60 s,
 *     jittered), ending when the next wait would pass the call's deadline
 *     or after PHTTP_MAX_ATTEMPTS exchanges;
 *   - the provider's request budget (its `budget` hook) before every
 *     authenticated exchange, and the one token refresh after a 401;
 *   - a call whose builder refused an id makes no request (PHTTP_EINVAL);
 *   - the metrics calsync_<name>_requests_total{method,status},
 *     calsync_<name>_retries_total{method},
 *     calsync_<name>_request_duration_seconds,
 *     calsync_<name>_invalid_ids_total and the log events <name>.retry,
 *     <name>.retry_budget_spent, <name>.unauthorized, where <name> is the
 *     provider's (docs/operations.md lists them per provider).
 * What differs stays in the provider, as data or a small hook in its
 * struct phttp_client: names, the user agent, whether Retry-After may be
 * fractional, which answers are retried, how an error body names its
 * reason, the budget, how a token is had.
 *
 * Decoded responses are pushed on the calling thread's JSON state
 * (json_state()); the caller pops them. Never call these inside a database
 * transaction: they block on the network and the token hook may write the
 * credentials row.
 */
#ifndef CALSYNC_PROVIDER_PHTTP_H
#define CALSYNC_PROVIDER_PHTTP_H

#include "config.h"
#include "provider/provider.h"
#include "store/store.h"
#include "util.h"

#include <lua.h>
#include <stdatomic.h>
#include <stdint.h>

#define PHTTP_MAX_RESPONSE (16u * 1024 * 1024) /* bytes; larger = error */
#define PHTTP_CONNECT_TIMEOUT_MS 10000
#define PHTTP_TOTAL_TIMEOUT_MS 60000           /* one HTTP exchange */
#define PHTTP_RETRY_BUDGET_MS 120000           /* all retries of one call */
#define PHTTP_MAX_ATTEMPTS 10                  /* exchanges per call, at most */
#define PHTTP_BACKOFF_BASE_MS 1000
#define PHTTP_BACKOFF_MAX_MS 60000
#define PHTTP_RETRY_AFTER_MAX_MS 3600000       /* larger values are clamped */
#define PHTTP_HEADERS_MAX 4                    /* extra request headers */

enum phttp_rc {
    PHTTP_OK = 0,
    PHTTP_EHTTP,      /* the provider answered non-2xx: resp->status, ->reason */
    PHTTP_ETRANSPORT, /* no usable answer: network, timeout, too large,
                         retry budget spent, or phttp_cancel() */
    PHTTP_EREVOKED,   /* refresh token refused; credential now revoked */
    PHTTP_EBADRESP,   /* a 2xx whose body is not the JSON expected */
    PHTTP_EINVAL,     /* refused before any request: an id or link the
                         provider cannot have issued, or no client
                         configured (the provider decides); permanent */
};

/* The outcome of one call. Fill with phttp_resp_init(), release with
 * phttp_resp_free(); reusable across calls (each call resets it). */
struct phttp_resp {
    long status;            /* last HTTP status; 0 when none was received */
    char reason[64];        /* the provider's error reason, or OAuth "error" */
    char message[256];      /* its error message, or OAuth "error_description" */
    struct buf body;        /* last response body (owned) */
    int64_t retry_after_ms; /* last Retry-After, -1 when absent */
    int attempts;           /* HTTP exchanges made for this call */
};

void phttp_resp_init(struct phttp_resp *r);
void phttp_resp_free(struct phttp_resp *r);
/* Clears r for a new exchange (keeps its body buffer). */
void phttp_resp_reset(struct phttp_resp *r);

/* Who the call is made for: the credential whose token is used, and the
 * calling thread's database connection (for the token cache). */
struct phttp_auth {
    struct store_conn *db;
    int64_t credential_id;
    int64_t budget_ms; /* retries of one call end within it; 0: PHTTP_RETRY_BUDGET_MS */
};

/* One provider's HTTP client: what differs per provider (data and hooks,
 * set statically by the provider) and its state (set by phttp_init).
 * One static instance per provider, shared by its files. */
struct phttp_client {
    const char *name;       /* "google": log events "google.retry", metrics
                               "calsync_<name>_requests_total" ... */
    const char *display;    /* "Google": in error texts */
    const char *user_agent; /* NULL: "calsync/<version>" */
    int retry_after_fraction; /* 1: Retry-After "2.128" is kept to the ms */
    /* 1 when an answer with this status and reason is retried in the call */
    int (*retryable)(long status, const char *reason);
    /* Reads the error object at idx of L (the value of a body's "error"
     * when it is an object) into reason/message with phttp_copy_field. */
    void (*error_detail)(lua_State *L, int idx, char *reason, size_t reason_cap,
                         char *message, size_t message_cap);
    /* Waits for the provider's request budget before an authenticated
     * exchange: 0, or -1 with err set (cancelled, or not before deadline,
     * monotonic ms). NULL: no budget. */
    int (*budget)(int64_t credential_id, int64_t deadline, struct cs_err *err);
    /* A usable access token for a->credential_id into out (cap bytes),
     * refreshed when force is set (poauth_access_token through the
     * provider's struct poauth_client). An enum phttp_rc. */
    int (*access_token)(struct phttp_auth *a, int force, char *out, size_t cap,
                        struct phttp_resp *resp, struct cs_err *err);
    /* ---- state: phttp_init / phttp_cancel */
    const struct config *cfg;
    atomic_int cancelled;
};

/* Process-wide setup of c: remembers cfg (must outlive every call) and
 * re-arms it after phttp_cancel(). Call after curl_global_init(). */
void phttp_init(struct phttp_client *c, const struct config *cfg);
/* Aborts every wait and transfer of c in progress or to come (shutdown):
 * its calls then fail with PHTTP_ETRANSPORT. Thread-safe. */
void phttp_cancel(struct phttp_client *c);
int phttp_cancelled(const struct phttp_client *c);
/* Frees the calling thread's CURL handle now (the thread-exit destructor
 * does it otherwise). Call before curl_global_cleanup() on the main thread. */
void phttp_thread_release(void);

/* One HTTP exchange's request. */
struct phttp_exchange {
    const char *method;   /* GET POST PATCH DELETE PUT ... */
    const char *url;
    const char *bearer;   /* NULL: no Authorization */
    const char *ctype;    /* body content type, NULL when no body */
    const char *body;
    size_t body_len;
    const char *if_match;
    const char *headers[PHTTP_HEADERS_MAX]; /* whole lines ("Prefer: ..."), NULL-ended */
};

/* The exchange plus retries of DESIGN §2. 0 when a final HTTP answer is in
 * r (2xx or a status not retried), -1 with err set when none could be had
 * before deadline (monotonic ms). `what` names the method for metrics and
 * logs. */
int phttp_exchange_retry(struct phttp_client *c, const char *what,
                         const struct phttp_exchange *e, struct phttp_resp *r,
                         int64_t deadline, struct cs_err *err);

/* One authenticated call being built by a provider. */
struct phttp_call {
    const char *what;      /* metrics and log name: events.list ... */
    const char *method;
    const char *invalid;   /* set by a URL builder: which id was refused */
    struct buf url;        /* owned; freed by phttp_call_run */
    const char *body;      /* JSON, or NULL */
    const char *if_match;
    const char *headers[PHTTP_HEADERS_MAX]; /* as in phttp_exchange */
    int push;              /* decode and push the 2xx body */
};

/* Runs a call whose URL was built into call->url (`bad`: building it ran
 * out of memory) with the credential's token (refreshed once after a 401)
 * and frees the URL. A call whose builder refused an id makes no request:
 * PHTTP_EINVAL, counted in calsync_<name>_invalid_ids_total. An enum
 * phttp_rc; on PHTTP_OK with call->push the decoded body is pushed. */
int phttp_call_run(struct phttp_client *c, struct phttp_auth *a,
                   struct phttp_call *call, int bad, struct phttp_resp *resp,
                   struct cs_err *err);

/* The provider class of a finished call: g an enum phttp_rc, resp its
 * answer, classify the provider's provider_ops.classify. */
int phttp_rc_class(enum provider_op op, int g, const struct phttp_resp *resp,
                   int (*classify)(enum provider_op, long, const char *));

/* What an HTTP status means for a call of kind op when the provider knows
 * nothing more specific (its classify hook checks its own reasons and the
 * dead cursor first): a listing refused for good (400, 403, 404:
 * permanent; anything else retried by the next sync), occurrences of a
 * series that is gone (404, 410), a subscription unknown (404: gone; else
 * permanent), a conditional write that found a newer version (412:
 * conflict), an event gone (404, 410); else permanent. */
int phttp_status_class(enum provider_op op, long status);

/* Fills px->last from resp, frees resp and returns the call's provider
 * class (phttp_rc_class): the end of every provider op. */
int phttp_finish(struct provider_ctx *px, enum provider_op op, int g,
                 struct phttp_resp *resp,
                 int (*classify)(enum provider_op, long, const char *));

/* ------------------------------------------------------- pure pieces */

/* Parses an error body: OAuth's {"error":"invalid_grant",
 * "error_description"}, or {"error":{...}} read by c->error_detail. Fills
 * reason/message (empty when absent). 0 when an error object was
 * recognised, -1 otherwise (both left empty). */
int phttp_parse_error(const struct phttp_client *c, const char *body, size_t len,
                      char *reason, size_t reason_cap, char *message,
                      size_t message_cap);

/* Copies the string field key of the object at idx into dst (cap bytes,
 * cut, control bytes made spaces so log lines and labels stay printable).
 * 1 copied, 0 absent or not a string (dst untouched). */
int phttp_copy_field(lua_State *L, int idx, const char *key, char *dst, size_t cap);

/* Parses a Retry-After value (delta-seconds, with a fraction kept to the
 * ms when `fraction` is set, or an IMF-fixdate HTTP-date; now_ms is the
 * wall clock for the latter) into a wait in ms, clamped to
 * [0, PHTTP_RETRY_AFTER_MAX_MS]. 0 or -1 when unparsable. */
int phttp_parse_retry_after(const char *v, size_t n, int64_t now_ms, int fraction,
                            int64_t *wait_ms);

/* Appends s percent-encoded for a URL path segment or query value: only
 * ASCII letters, digits, '-', '_' and '~' are kept, so no value can add a
 * path segment ('/'), be a dot segment ('.' is "%2E"), or start a query
 * or fragment. 0 or -1 on OOM. */
int phttp_url_escape(struct buf *b, const char *s);

/* "<c->name>.<suffix>" into buf (cap bytes): the name of one of the shared
 * log events. tools/log_events.py reads `phttp_ev(c, "suffix", ...)` as
 * the event <name>.suffix of every provider with a struct phttp_client. */
const char *phttp_ev(const struct phttp_client *c, const char *suffix, char *buf,
                     size_t cap);

#endif
