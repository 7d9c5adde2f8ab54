/* config.h -- the configuration of DESIGN §3.
 *
 * The file is Lua, run in an empty environment under an instruction and
 * memory cap; it sets globals. Unknown keys (also inside tables) and values
 * of the wrong type are errors naming the key and the line that set it.
 */
#ifndef CALSYNC_CONFIG_H
#define CALSYNC_CONFIG_H

#include "log.h"
#include "util.h"

#include <stdint.h>

struct config_webhook {
    char *url;
    char *secret;
};

struct config {
    char *listen;        /* "host:port" as given */
    char listen_host[64];
    int listen_port;
    char *database;
    char *policies;
    char *public_url;
    char *api_token;     /* NULL: no auth on /v1 */
    int64_t poll_interval;
    int workers;
    enum log_level log_level;
    char *log_format;    /* "text" (key=value) or "json" (JSON lines) */
    struct {
        char *client_id;
        char *client_secret;
        char *api_base;
        char *token_url;
        int64_t channel_ttl;
        int64_t renew_before;
        /* request budgets (requests per minute, 0: none; issue 19) */
        int64_t requests_per_minute;         /* per credential */
        int64_t project_requests_per_minute; /* per project */
    } google;
    struct {             /* Outlook through Microsoft Graph (DESIGN §3) */
        char *client_id;
        char *client_secret;
        char *tenant;    /* "common" */
        char *api_base;
        char *token_url; /* "": built from tenant */
        int64_t subscription_ttl; /* seconds asked for; Graph caps it */
        int64_t renew_before;
    } microsoft;
    struct config_webhook *webhooks;
    int n_webhooks;
    struct {
        int64_t instructions;
        int64_t memory;
    } policy_limits;
    /* How long finished rows are kept (docs/operations.md "Retention"):
     * seconds, 0 keeps them forever. */
    struct {
        int64_t notifications;    /* push notifications journalled */
        int64_t outbox_delivered; /* webhooks acknowledged */
        int64_t jobs_finished;    /* Google writes done or failed */
        int64_t audit;            /* audit entries (decisions and their
                                     inputs); 0 by default: the record */
        int64_t interval;         /* seconds between pruning runs */
        int64_t batch;            /* rows deleted per transaction */
    } retention;
    struct {
        int64_t connections;        /* open connections, all clients */
        int64_t connections_per_ip; /* per client address; 0: no limit */
        int64_t header_timeout;     /* seconds to send a request's header */
    } http;
};

/* Fills cfg with the defaults of DESIGN §3. Returns 0, -1 on OOM.
 * The config owns every string; release with config_free(). */
int config_defaults(struct config *cfg);

/* Loads the defaults, then the file at path (NULL: defaults only), then
 * resolves relative paths (config_resolve_paths).
 * Returns 0, or -1 with err holding "FILE:LINE: message" (or "FILE: ...").
 * On error cfg is left freed-and-empty. */
int config_load(struct config *cfg, const char *path, struct cs_err *err);

/* Same as config_load for a chunk held in memory; `name` is used in
 * messages. Exposed for tests and fuzzing. */
int config_load_string(struct config *cfg, const char *name, const char *src,
                       size_t len, struct cs_err *err);

/* Makes `database` and `policies` absolute when they are relative: against
 * `dir` (the configuration file's directory, or the working directory when
 * there is no file; NULL: left relative).
 * `policies` left at its default that names no directory there becomes
 * the shipped policies of the installation, <bin>/../share/calsync/policies,
 * when that exists. 0, or -1 with err set. */
int config_resolve_paths(struct config *cfg, const char *dir, struct cs_err *err);

/* The installation's share directory, <dir of the binary>/../share/calsync,
 * into out (canonical); 0, or -1 when it does not exist. */
int config_share_dir(char *out, size_t cap);

void config_free(struct config *cfg);

#endif
