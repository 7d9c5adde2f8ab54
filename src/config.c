/* config.c -- loading the Lua configuration file (DESIGN §3).
 *
 * The file runs in a fresh lua_State with no libraries at all: its _ENV is
 * an empty proxy whose __newindex records the line of every assignment, so
 * that a wrong key or type can be reported as "file:line: ...". The run is
 * capped (instructions and bytes) like a policy: a config file is input,
 * and input is hostile until checked.
 *
 * Validation is data-driven: one table of keys per level (top, google,
 * policy_limits, http), each with its type and bounds.
 *
 * Secrets need not sit in the file: two functions are visible to it,
 * env("NAME" [, default]) and file("path") (a file's content, one trailing
 * newline dropped), so a file that is checked in or world-readable can
 * take its secrets from the service's environment or from a secrets mount.
 * Both fail loudly ("file:line: env: CALSYNC_API_TOKEN is not set"): a
 * missing secret must stop the start, not turn into no authentication.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <libgen.h>
#include <limits.h>
#include <lua.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CONFIG_MAX_BYTES (1 << 20)
#define CONFIG_MEM_LIMIT (16u << 20)
#define CONFIG_INSTR_LIMIT 10000000
/* One instruction can compare or concatenate strings of megabytes, so the
 * instruction cap alone does not bound the time: a wall-clock cap too,
 * checked every CONFIG_HOOK_EVERY instructions. */
#define CONFIG_TIME_LIMIT_MS 2000
#define CONFIG_HOOK_EVERY 100
#define CONFIG_STR_MAX 4096
#define CONFIG_MAX_WEBHOOKS 64
/* file(): a secret, a token, a key; never more than this */
#define CONFIG_FILE_MAX (64 * 1024)

enum ktype { K_STR, K_INT, K_TABLE, K_WEBHOOKS, K_LOGLEVEL };

struct key {
    const char *name;
    enum ktype type;
    size_t off;
    int64_t min, max;          /* K_INT bounds */
    const struct key *sub;     /* K_TABLE members, NULL-name terminated */
};

#define F(m) offsetof(struct config, m)

static const struct key gcal_keys[] = {
    {"client_id", K_STR, F(google.client_id), 0, 0, NULL},
    {"client_secret", K_STR, F(google.client_secret), 0, 0, NULL},
    {"api_base", K_STR, F(google.api_base), 0, 0, NULL},
    {"token_url", K_STR, F(google.token_url), 0, 0, NULL},
    {"channel_ttl", K_INT, F(google.channel_ttl), 1, 10LL * 365 * 86400, NULL},
    {"renew_before", K_INT, F(google.renew_before), 0, 10LL * 365 * 86400, NULL},
    {"requests_per_minute", K_INT, F(google.requests_per_minute), 0, 1000000000, NULL},
    {"project_requests_per_minute", K_INT, F(google.project_requests_per_minute), 0,
     1000000000, NULL},
    {NULL, 0, 0, 0, 0, NULL},
};

static const struct key microsoft_keys[] = {
    {"client_id", K_STR, F(microsoft.client_id), 0, 0, NULL},
    {"client_secret", K_STR, F(microsoft.client_secret), 0, 0, NULL},
    {"tenant", K_STR, F(microsoft.tenant), 0, 0, NULL},
    {"api_base", K_STR, F(microsoft.api_base), 0, 0, NULL},
    {"token_url", K_STR, F(microsoft.token_url), 0, 0, NULL},
    {"subscription_ttl", K_INT, F(microsoft.subscription_ttl), 60, 10LL * 365 * 86400, NULL},
    {"renew_before", K_INT, F(microsoft.renew_before), 0, 10LL * 365 * 86400, NULL},
    {NULL, 0, 0, 0, 0, NULL},
};

static const struct key limit_keys[] = {
    {"instructions", K_INT, F(policy_limits.instructions), 1000, 1000000000000LL, NULL},
    {"memory", K_INT, F(policy_limits.memory), 65536, 1LL << 34, NULL},
    {NULL, 0, 0, 0, 0, NULL},
};

/* Connection limits of the HTTP server (docs/internals/http.md): behind a
 * reverse proxy every client has the proxy's address, hence configurable. */
static const struct key http_keys[] = {
    {"connections", K_INT, F(http.connections), 16, 65536, NULL},
    {"connections_per_ip", K_INT, F(http.connections_per_ip), 0, 65536, NULL},
    {"header_timeout", K_INT, F(http.header_timeout), 1, 300, NULL},
    {NULL, 0, 0, 0, 0, NULL},
};

/* Retention of finished rows (src/retention.c); ages in seconds, 0 keeps
 * forever; at most 100 years so that now - age cannot overflow. */
static const struct key retention_keys[] = {
    {"notifications", K_INT, F(retention.notifications), 0, 100LL * 365 * 86400, NULL},
    {"outbox_delivered", K_INT, F(retention.outbox_delivered), 0, 100LL * 365 * 86400, NULL},
    {"jobs_finished", K_INT, F(retention.jobs_finished), 0, 100LL * 365 * 86400, NULL},
    {"audit", K_INT, F(retention.audit), 0, 100LL * 365 * 86400, NULL},
    {"interval", K_INT, F(retention.interval), 1, 86400, NULL},
    {"batch", K_INT, F(retention.batch), 1, 10000, NULL},
    {NULL, 0, 0, 0, 0, NULL},
};

static const struct key top_keys[] = {
    {"listen", K_STR, F(listen), 0, 0, NULL},
    {"database", K_STR, F(database), 0, 0, NULL},
    {"policies", K_STR, F(policies), 0, 0, NULL},
    {"public_url", K_STR, F(public_url), 0, 0, NULL},
    {"api_token", K_STR, F(api_token), 0, 0, NULL},
    {"poll_interval", K_INT, F(poll_interval), 1, 30LL * 86400, NULL},
    {"workers", K_INT, 0, 1, 256, NULL}, /* int, stored specially */
    {"log_level", K_LOGLEVEL, 0, 0, 0, NULL},
    {"log_format", K_STR, F(log_format), 0, 0, NULL},
    {"google", K_TABLE, 0, 0, 0, gcal_keys},
    {"microsoft", K_TABLE, 0, 0, 0, microsoft_keys},
    {"webhooks", K_WEBHOOKS, 0, 0, 0, NULL},
    {"policy_limits", K_TABLE, 0, 0, 0, limit_keys},
    {"http", K_TABLE, 0, 0, 0, http_keys},
    {"retention", K_TABLE, 0, 0, 0, retention_keys},
    {NULL, 0, 0, 0, 0, NULL},
};

static char **str_at(struct config *cfg, size_t off)
{
    return (char **)((char *)cfg + off);
}

static int set_str(char **slot, const char *v)
{
    char *d = strdup(v);
    if (!d)
        return -1;
    free(*slot);
    *slot = d;
    return 0;
}

int config_defaults(struct config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->poll_interval = 600;
    cfg->workers = 4;
    cfg->log_level = LOG_INFO;
    cfg->google.channel_ttl = 604800;
    cfg->google.renew_before = 86400;
    /* Graph caps event subscriptions at 10,080 minutes (4,230 on older
     * tenants, docs); ask for a little under the older cap and renew a day
     * ahead, so a tenant with either cap keeps its subscription */
    cfg->microsoft.subscription_ttl = 4200 * 60;
    cfg->microsoft.renew_before = 86400;
    cfg->policy_limits.instructions = 1000000;
    cfg->policy_limits.memory = 16LL << 20;
    cfg->http.connections = 2048;
    cfg->http.connections_per_ip = 256;
    cfg->http.header_timeout = 10;
    cfg->retention.notifications = 7 * 86400;
    cfg->retention.outbox_delivered = 30 * 86400;
    cfg->retention.jobs_finished = 30 * 86400;
    cfg->retention.audit = 0;
    cfg->retention.interval = 600;
    cfg->retention.batch = 500;
    /* Google's documented Calendar quotas: 600 per minute per user, 10,000
     * per minute per project. */
    cfg->google.requests_per_minute = 600;
    cfg->google.project_requests_per_minute = 10000;
    if (set_str(&cfg->listen, "127.0.0.1:8080") ||
        set_str(&cfg->database, "calsync.db") ||
        set_str(&cfg->policies, "policies") ||
        set_str(&cfg->log_format, "text") ||
        set_str(&cfg->public_url, "http://127.0.0.1:8080") ||
        set_str(&cfg->google.client_id, "") ||
        set_str(&cfg->google.client_secret, "") ||
        set_str(&cfg->google.api_base, "https://www.googleapis.com/calendar/v3") ||
        set_str(&cfg->google.token_url, "https://oauth2.googleapis.com/token") ||
        set_str(&cfg->microsoft.client_id, "") ||
        set_str(&cfg->microsoft.client_secret, "") ||
        set_str(&cfg->microsoft.tenant, "common") ||
        set_str(&cfg->microsoft.api_base, "https://graph.microsoft.com/v1.0") ||
        set_str(&cfg->microsoft.token_url, "")) {
        config_free(cfg);
        return -1;
    }
    strcpy(cfg->listen_host, "127.0.0.1");
    cfg->listen_port = 8080;
    return 0;
}

void config_free(struct config *cfg)
{
    free(cfg->listen);
    free(cfg->database);
    free(cfg->policies);
    free(cfg->log_format);
    free(cfg->public_url);
    free(cfg->api_token);
    free(cfg->google.client_id);
    free(cfg->google.client_secret);
    free(cfg->google.api_base);
    free(cfg->google.token_url);
    free(cfg->microsoft.client_id);
    free(cfg->microsoft.client_secret);
    free(cfg->microsoft.tenant);
    free(cfg->microsoft.api_base);
    free(cfg->microsoft.token_url);
    for (int i = 0; i < cfg->n_webhooks; i++) {
        free(cfg->webhooks[i].url);
        free(cfg->webhooks[i].secret);
    }
    free(cfg->webhooks);
    memset(cfg, 0, sizeof *cfg);
}

/* ------------------------------------------------------- the Lua sandbox */

struct cfg_alloc {
    size_t used, limit;
};

static void *cfg_alloc_fn(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct cfg_alloc *a = ud;
    if (!ptr)
        osize = 0;
    if (nsize == 0) {
        free(ptr);
        a->used -= osize;
        return NULL;
    }
    if (nsize > osize && a->used - osize + nsize > a->limit)
        return NULL;
    void *p = realloc(ptr, nsize);
    if (p)
        a->used = a->used - osize + nsize;
    return p;
}

/* What the count hook tracks; found through the state's extra space. */
struct cfg_run {
    int64_t instructions;
    int64_t deadline_ms; /* time_mono_ms() */
};

static void cfg_count_hook(lua_State *L, lua_Debug *ar)
{
    struct cfg_run *r = *(struct cfg_run **)lua_getextraspace(L);
    const char *why;
    r->instructions += CONFIG_HOOK_EVERY;
    if (r->instructions >= CONFIG_INSTR_LIMIT)
        why = "instruction limit";
    else if (time_mono_ms() > r->deadline_ms)
        why = "time limit";
    else
        return;
    lua_getinfo(L, "Sl", ar);
    lua_pushfstring(L, "%s:%d: configuration ran too long (%s)",
                    ar->short_src, ar->currentline, why);
    lua_error(L);
}

/* _ENV.__newindex: remember the line, store in the value table. */
static int env_newindex(lua_State *L)
{
    lua_Debug ar;
    int line = 0;
    if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "l", &ar))
        line = ar.currentline;
    lua_pushvalue(L, 2);
    lua_pushinteger(L, line);
    lua_rawset(L, lua_upvalueindex(2)); /* lines[k] = line */
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 3);
    lua_rawset(L, lua_upvalueindex(1)); /* values[k] = v */
    return 0;
}

/* _ENV.__index: a value set earlier, else one of the functions below. */
static int env_index(lua_State *L)
{
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1));
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_pushvalue(L, 2);
        lua_rawget(L, lua_upvalueindex(2));
    }
    return 1;
}

/* Raises "chunk:line: msg" naming the line of the configuration that
 * called the function (luaL_error would name the C function: no line). */
static int fn_error(lua_State *L, const char *fmt, const char *a, const char *b)
{
    lua_Debug ar;
    if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "Sl", &ar) && ar.currentline > 0)
        lua_pushfstring(L, "%s:%d: ", ar.short_src, ar.currentline);
    else
        lua_pushliteral(L, "");
    lua_pushfstring(L, fmt, a, b);
    lua_concat(L, 2);
    return lua_error(L);
}

/* env("NAME" [, default]): the variable's value; unset (or empty) without
 * a default is an error, so a secret that did not reach the service stops
 * the start instead of silently becoming "no token". */
static int cfg_env(lua_State *L)
{
    size_t n;
    const char *name = lua_type(L, 1) == LUA_TSTRING ? lua_tolstring(L, 1, &n) : NULL;
    if (!name || n == 0 || n > 128 || strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                   "abcdefghijklmnopqrstuvwxyz"
                                                   "0123456789_") != n)
        return fn_error(L, "env: needs a variable name (letters, digits, _)%s%s", "", "");
    if (!lua_isnoneornil(L, 2) && lua_type(L, 2) != LUA_TSTRING)
        return fn_error(L, "env: the default for %s must be a string%s", name, "");
    const char *v = getenv(name);
    if (v && *v) {
        if (strlen(v) > CONFIG_STR_MAX)
            return fn_error(L, "env: %s is longer than 4096 bytes%s", name, "");
        lua_pushstring(L, v);
    } else if (lua_type(L, 2) == LUA_TSTRING) {
        lua_pushvalue(L, 2);
    } else {
        return fn_error(L, "env: %s is not set (and no default given)%s", name, "");
    }
    return 1;
}

/* file("path"): the content of a regular file (relative: to the
 * configuration file's directory, upvalue 1), at most 64 KiB, no NUL
 * bytes, one trailing newline (\n or \r\n) dropped. */
static int cfg_file(lua_State *L)
{
    size_t n;
    const char *arg = lua_type(L, 1) == LUA_TSTRING ? lua_tolstring(L, 1, &n) : NULL;
    if (!arg || n == 0 || n >= PATH_MAX / 2 || strlen(arg) != n)
        return fn_error(L, "file: needs a path%s%s", "", "");
    const char *dir = lua_tostring(L, lua_upvalueindex(1));
    char path[PATH_MAX];
    if (arg[0] == '/' || !dir)
        snprintf(path, sizeof path, "%s", arg);
    else if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, arg) >= sizeof path)
        return fn_error(L, "file: path too long: %s%s", arg, "");
    /* O_NONBLOCK: a FIFO named like a secret must not hang the start */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return fn_error(L, "file: cannot read %s: %s", path, strerror(errno));
    struct stat sb;
    char *data = NULL;
    ssize_t got = 0;
    const char *why = NULL;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode))
        why = "not a regular file";
    else if (sb.st_size > CONFIG_FILE_MAX)
        why = "larger than 64 KiB";
    else if (!(data = malloc((size_t)sb.st_size + 1)))
        why = "out of memory";
    else if ((got = read(fd, data, (size_t)sb.st_size)) < 0)
        why = strerror(errno);
    close(fd);
    if (!why && got > 0 && memchr(data, '\0', (size_t)got))
        why = "holds NUL bytes";
    if (why) {
        free(data);
        return fn_error(L, "file: cannot read %s: %s", path, why);
    }
    if (got > 0 && data[got - 1] == '\n')
        got--;
    if (got > 0 && data[got - 1] == '\r')
        got--;
    lua_pushlstring(L, data, (size_t)got);
    free(data);
    return 1;
}

/* ------------------------------------------------------------ validation */

struct vctx {
    lua_State *L;
    struct config *cfg;
    const char *name;   /* chunk name for messages */
    int lines;          /* stack index of the lines table */
    struct cs_err *err;
};

static int key_line(struct vctx *v, const char *top)
{
    lua_getfield(v->L, v->lines, top);
    int line = (int)lua_tointeger(v->L, -1);
    lua_pop(v->L, 1);
    return line;
}

static int verr(struct vctx *v, const char *top, const char *path,
                const char *what)
{
    int line = key_line(v, top);
    if (line > 0)
        return cs_err_set(v->err, "%s:%d: %s '%s'", v->name, line, what, path);
    return cs_err_set(v->err, "%s: %s '%s'", v->name, what, path);
}

static const char *type_word(enum ktype t)
{
    switch (t) {
    case K_STR: case K_LOGLEVEL: return "a string";
    case K_INT: return "an integer";
    case K_TABLE: return "a table";
    case K_WEBHOOKS: return "a list of { url = ..., secret = ... }";
    }
    return "?";
}

/* Reads a string at stack top into *slot; validates length and NULs. */
static int take_string(struct vctx *v, const char *top, const char *path,
                       char **slot)
{
    size_t n;
    const char *s = lua_tolstring(v->L, -1, &n);
    if (n > CONFIG_STR_MAX || strlen(s) != n)
        return verr(v, top, path, "string too long or holding NUL bytes:");
    if (set_str(slot, s))
        return cs_err_set(v->err, "%s: out of memory", v->name);
    return 0;
}

static int check_value(struct vctx *v, const struct key *k, const char *top,
                       const char *path);

/* Table at stack top: every key must be a known member. */
static int check_table(struct vctx *v, const struct key *members,
                       const char *top, const char *path)
{
    lua_State *L = v->L;
    int t = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, t)) {
        char sub[256];
        if (lua_type(L, -2) != LUA_TSTRING) {
            lua_pop(L, 2);
            return verr(v, top, path, "non-string key in");
        }
        const char *kname = lua_tostring(L, -2);
        snprintf(sub, sizeof sub, "%s.%s", path, kname);
        const struct key *k = members;
        while (k->name && strcmp(k->name, kname) != 0)
            k++;
        if (!k->name) {
            lua_pop(L, 2);
            return verr(v, top, sub, "unknown key");
        }
        if (check_value(v, k, top, sub)) {
            lua_pop(L, 2);
            return -1;
        }
        lua_pop(L, 1);
    }
    return 0;
}

static int check_webhooks(struct vctx *v, const char *top, const char *path)
{
    lua_State *L = v->L;
    int t = lua_gettop(L);
    lua_Integer n = (lua_Integer)lua_rawlen(L, t);
    int count = 0;
    lua_pushnil(L);
    while (lua_next(L, t)) { /* every key must be 1..n */
        lua_pop(L, 1);
        if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 ||
            lua_tointeger(L, -1) > n) {
            lua_pop(L, 1);
            return verr(v, top, path, "must be a list (array) of tables:");
        }
        count++;
    }
    if (count > CONFIG_MAX_WEBHOOKS)
        return verr(v, top, path, "too many subscribers (max 64) in");
    struct config_webhook *w = calloc((size_t)count + 1, sizeof *w);
    if (!w)
        return cs_err_set(v->err, "%s: out of memory", v->name);
    for (int i = 0; i < v->cfg->n_webhooks; i++) {
        free(v->cfg->webhooks[i].url);
        free(v->cfg->webhooks[i].secret);
    }
    free(v->cfg->webhooks);
    v->cfg->webhooks = w;
    v->cfg->n_webhooks = count;
    for (int i = 1; i <= count; i++) {
        char sub[256];
        lua_rawgeti(L, t, i);
        snprintf(sub, sizeof sub, "%s[%d]", path, i);
        if (!lua_istable(L, -1)) {
            lua_pop(L, 1);
            return verr(v, top, sub, "must be a table { url = ..., secret = ... }:");
        }
        int e = lua_gettop(L);
        lua_pushnil(L);
        while (lua_next(L, e)) {
            const char *kn = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
            char kp[300];
            snprintf(kp, sizeof kp, "%s.%s", sub, kn ? kn : "?");
            char **slot = NULL;
            if (kn && strcmp(kn, "url") == 0)
                slot = &w[i - 1].url;
            else if (kn && strcmp(kn, "secret") == 0)
                slot = &w[i - 1].secret;
            if (!slot) {
                lua_pop(L, 3);
                return verr(v, top, kp, "unknown key");
            }
            if (lua_type(L, -1) != LUA_TSTRING) {
                lua_pop(L, 3);
                return verr(v, top, kp, "must be a string:");
            }
            if (take_string(v, top, kp, slot)) {
                lua_pop(L, 3);
                return -1;
            }
            lua_pop(L, 1);
        }
        if (!w[i - 1].url || (strncmp(w[i - 1].url, "http://", 7) != 0 &&
                              strncmp(w[i - 1].url, "https://", 8) != 0)) {
            lua_pop(L, 1);
            return verr(v, top, sub, "needs url = \"http(s)://...\" in");
        }
        if (!w[i - 1].secret || !*w[i - 1].secret) {
            lua_pop(L, 1);
            return verr(v, top, sub, "needs a non-empty secret in");
        }
        lua_pop(L, 1);
    }
    return 0;
}

/* Value at stack top for key k. */
static int check_value(struct vctx *v, const struct key *k, const char *top,
                       const char *path)
{
    lua_State *L = v->L;
    int t = lua_type(L, -1);
    char what[96];
    snprintf(what, sizeof what, "must be %s:", type_word(k->type));
    switch (k->type) {
    case K_STR:
    case K_LOGLEVEL:
        if (t != LUA_TSTRING)
            return verr(v, top, path, what);
        if (k->type == K_LOGLEVEL) {
            if (log_level_parse(lua_tostring(L, -1), &v->cfg->log_level))
                return verr(v, top, path,
                            "must be \"debug\", \"info\", \"warn\" or \"error\":");
            return 0;
        }
        return take_string(v, top, path, str_at(v->cfg, k->off));
    case K_INT: {
        if (t != LUA_TNUMBER)
            return verr(v, top, path, what);
        lua_Integer iv;
        if (lua_isinteger(L, -1)) {
            iv = lua_tointeger(L, -1);
        } else {
            lua_Number d = lua_tonumber(L, -1);
            if (!lua_numbertointeger(d, &iv) || (lua_Number)iv != d)
                return verr(v, top, path, what);
        }
        if (iv < k->min || iv > k->max) {
            char range[96];
            snprintf(range, sizeof range, "out of range [%lld, %lld]:",
                     (long long)k->min, (long long)k->max);
            return verr(v, top, path, range);
        }
        if (strcmp(k->name, "workers") == 0)
            v->cfg->workers = (int)iv;
        else
            *(int64_t *)((char *)v->cfg + k->off) = iv;
        return 0;
    }
    case K_TABLE:
        if (t != LUA_TTABLE)
            return verr(v, top, path, what);
        return check_table(v, k->sub, top, path);
    case K_WEBHOOKS:
        if (t != LUA_TTABLE)
            return verr(v, top, path, what);
        return check_webhooks(v, top, path);
    }
    return -1;
}

static int check_listen(struct config *cfg, struct cs_err *err, const char *name)
{
    const char *colon = strrchr(cfg->listen, ':');
    int64_t port;
    size_t hl = colon ? (size_t)(colon - cfg->listen) : 0;
    if (!colon || hl == 0 || hl >= sizeof cfg->listen_host ||
        parse_i64(colon + 1, &port) || port < 0 || port > 65535)
        return cs_err_set(err, "%s: 'listen' must be \"host:port\", got \"%s\"",
                          name, cfg->listen);
    memcpy(cfg->listen_host, cfg->listen, hl);
    cfg->listen_host[hl] = '\0';
    if (strcmp(cfg->listen_host, "localhost") == 0)
        strcpy(cfg->listen_host, "127.0.0.1");
    cfg->listen_port = (int)port;
    return 0;
}

static int check_url(const char *u)
{
    return u && (strncmp(u, "http://", 7) == 0 || strncmp(u, "https://", 8) == 0)
               ? 0 : -1;
}

int config_load_string(struct config *cfg, const char *name, const char *src,
                       size_t len, struct cs_err *err)
{
    struct cfg_alloc a = {0, CONFIG_MEM_LIMIT};
    lua_State *L = NULL;
    int rc = -1;
    char chunk[300];

    if (config_defaults(cfg))
        return cs_err_set(err, "%s: out of memory", name);
    if (len > CONFIG_MAX_BYTES) {
        cs_err_set(err, "%s: file larger than 1 MiB", name);
        goto done;
    }
    L = lua_newstate(cfg_alloc_fn, &a);
    if (!L) {
        cs_err_set(err, "%s: out of memory", name);
        goto done;
    }
    snprintf(chunk, sizeof chunk, "@%s", name);
    if (luaL_loadbufferx(L, src, len, chunk, "t") != LUA_OK) {
        cs_err_set(err, "%s", lua_tostring(L, -1));
        goto done;
    }
    /* values, lines, and the proxy _ENV */
    lua_newtable(L);                   /* 2: values */
    lua_newtable(L);                   /* 3: lines */
    lua_newtable(L);                   /* 4: env */
    lua_newtable(L);                   /* 5: env metatable */
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 3);
    lua_pushcclosure(L, env_newindex, 2);
    lua_setfield(L, 5, "__newindex");
    lua_pushvalue(L, 2);
    lua_newtable(L);                   /* the functions: env, file */
    lua_pushcfunction(L, cfg_env);
    lua_setfield(L, -2, "env");
    {
        char *copy = strdup(name);
        if (!copy) {
            cs_err_set(err, "%s: out of memory", name);
            goto done;
        }
        lua_pushstring(L, dirname(copy));
        free(copy);
    }
    lua_pushcclosure(L, cfg_file, 1);
    lua_setfield(L, -2, "file");
    lua_pushcclosure(L, env_index, 2);
    lua_setfield(L, 5, "__index");
    lua_setmetatable(L, 4);
    lua_pushvalue(L, 4);
    if (!lua_setupvalue(L, 1, 1))
        lua_pop(L, 1);
    lua_pop(L, 1);                     /* env stays reachable via chunk */
    lua_pushvalue(L, 1);               /* call a copy */
    struct cfg_run run = {0, time_mono_ms() + CONFIG_TIME_LIMIT_MS};
    *(struct cfg_run **)lua_getextraspace(L) = &run;
    lua_sethook(L, cfg_count_hook, LUA_MASKCOUNT, CONFIG_HOOK_EVERY);
    int st = lua_pcall(L, 0, 0, 0);
    if (st == LUA_ERRMEM) {
        cs_err_set(err, "%s: configuration used more than %u MiB of memory",
                   name, CONFIG_MEM_LIMIT >> 20);
        goto done;
    }
    if (st != LUA_OK) {
        const char *m = lua_tostring(L, -1);
        cs_err_set(err, "%s", m ? m : "configuration raised a non-string error");
        goto done;
    }
    lua_sethook(L, NULL, 0, 0);

    struct vctx v = {L, cfg, name, 3, err};
    lua_pushnil(L);
    while (lua_next(L, 2)) {
        if (lua_type(L, -2) != LUA_TSTRING) {
            cs_err_set(err, "%s: non-string global", name);
            goto done;
        }
        const char *kname = lua_tostring(L, -2);
        const struct key *k = top_keys;
        while (k->name && strcmp(k->name, kname) != 0)
            k++;
        if (!k->name) {
            verr(&v, kname, kname, "unknown key");
            goto done;
        }
        if (check_value(&v, k, kname, kname))
            goto done;
        lua_pop(L, 1);
    }
    if (check_listen(cfg, err, name))
        goto done;
    if (check_url(cfg->public_url)) {
        cs_err_set(err, "%s: 'public_url' must start with http:// or https://", name);
        goto done;
    }
    if (check_url(cfg->google.api_base) || check_url(cfg->google.token_url)) {
        cs_err_set(err, "%s: 'google.api_base' and 'google.token_url' must be http(s) URLs", name);
        goto done;
    }
    if (check_url(cfg->microsoft.api_base) ||
        (*cfg->microsoft.token_url && check_url(cfg->microsoft.token_url))) {
        cs_err_set(err, "%s: 'microsoft.api_base' and 'microsoft.token_url' must be http(s) URLs",
                   name);
        goto done;
    }
    /* the tenant goes into the token URL's path */
    for (const char *t = cfg->microsoft.tenant; *t; t++)
        if (!((*t >= 'a' && *t <= 'z') || (*t >= 'A' && *t <= 'Z') ||
              (*t >= '0' && *t <= '9') || *t == '-' || *t == '.')) {
            cs_err_set(err, "%s: 'microsoft.tenant' must be a tenant id or domain "
                       "(letters, digits, '-', '.')", name);
            goto done;
        }
    if (!*cfg->microsoft.tenant) {
        cs_err_set(err, "%s: 'microsoft.tenant' must not be empty", name);
        goto done;
    }
    if (strcmp(cfg->log_format, "text") != 0 && strcmp(cfg->log_format, "json") != 0) {
        cs_err_set(err, "%s: 'log_format' must be \"text\" or \"json\"", name);
        goto done;
    }
    if (cfg->api_token && !*cfg->api_token) {
        cs_err_set(err, "%s: 'api_token' must not be empty (leave it unset for no auth)", name);
        goto done;
    }
    rc = 0;
done:
    if (L)
        lua_close(L);
    if (rc)
        config_free(cfg);
    return rc;
}

int config_share_dir(char *out, size_t cap)
{
    char exe[PATH_MAX], cand[PATH_MAX + 32];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return -1;
    exe[n] = '\0';
    snprintf(cand, sizeof cand, "%s/../share/calsync", dirname(exe));
    char *real = realpath(cand, NULL);
    if (!real)
        return -1;
    int rc = strlen(real) < cap ? 0 : -1;
    if (rc == 0)
        memcpy(out, real, strlen(real) + 1);
    free(real);
    return rc;
}

/* *slot = dir/(*slot) when *slot is relative. 0 or -1 (OOM, too long). */
static int make_absolute(char **slot, const char *dir)
{
    if (!dir || (*slot)[0] == '/' || strstr(*slot, "://"))
        return 0;
    char joined[PATH_MAX];
    if ((size_t)snprintf(joined, sizeof joined, "%s/%s", dir, *slot) >= sizeof joined)
        return -1;
    return set_str(slot, joined);
}

static int is_dir(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

int config_resolve_paths(struct config *cfg, const char *dir, struct cs_err *err)
{
    int policies_default = strcmp(cfg->policies, "policies") == 0;
    if (make_absolute(&cfg->database, dir) || make_absolute(&cfg->policies, dir))
        return cs_err_set(err, "configuration: path too long or out of memory");
    /* an installed binary started anywhere, with no policies of its own
     * configured: the policies installed with it */
    char share[PATH_MAX], pol[PATH_MAX + 16];
    if (policies_default && !is_dir(cfg->policies) &&
        config_share_dir(share, sizeof share) == 0) {
        snprintf(pol, sizeof pol, "%s/policies", share);
        if (is_dir(pol) && set_str(&cfg->policies, pol))
            return cs_err_set(err, "configuration: out of memory");
    }
    return 0;
}

int config_load(struct config *cfg, const char *path, struct cs_err *err)
{
    if (!path) {
        /* no file: relative to the working directory, made absolute so
         * that service.started shows where the database really is */
        char cwd[PATH_MAX];
        if (config_defaults(cfg))
            return cs_err_set(err, "out of memory");
        if (config_resolve_paths(cfg, getcwd(cwd, sizeof cwd) ? cwd : NULL, err)) {
            config_free(cfg);
            return -1;
        }
        return 0;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        memset(cfg, 0, sizeof *cfg);
        return cs_err_set(err, "%s: cannot open: %m", path);
    }
    struct buf b;
    buf_init(&b);
    char chunk[8192];
    size_t n;
    int rc = 0;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (b.len + n > CONFIG_MAX_BYTES || buf_append(&b, chunk, n)) {
            rc = cs_err_set(err, "%s: file larger than 1 MiB", path);
            break;
        }
    }
    if (!rc && ferror(f))
        rc = cs_err_set(err, "%s: read error", path);
    fclose(f);
    if (rc == 0)
        rc = config_load_string(cfg, path, b.data ? b.data : "", b.len, err);
    else
        memset(cfg, 0, sizeof *cfg);
    buf_free(&b);
    if (rc == 0) {
        /* relative paths in the file mean "beside the file", wherever the
         * service was started from */
        char *copy = strdup(path), *dir = copy ? realpath(dirname(copy), NULL) : NULL;
        if (!dir)
            rc = cs_err_set(err, "%s: cannot resolve its directory: %m", path);
        else
            rc = config_resolve_paths(cfg, dir, err);
        free(dir);
        free(copy);
        if (rc)
            config_free(cfg);
    }
    return rc;
}
