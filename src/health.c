/* health.c -- the /healthz verdict with its reasons. See health.h.
 *
 * The policy side is read through policy_list_json() (the same view as
 * GET /v1/policies) rather than a new accessor into the engine: the
 * engine's lock is taken once, and the answer names exactly what the
 * operator will find there.
 */
#include "health.h"

#include "json.h"
#include "log.h"
#include "policy/policy.h"
#include "provider/provider.h"
#include "store/store.h"

#include <lua.h>
#include <stdio.h>
#include <string.h>

#define HEALTH_MAX_WARNINGS 16 /* one per provider, and the push warning */

static const struct config *health_cfg;

void health_init(const struct config *cfg)
{
    health_cfg = cfg;
}

/* The configuration warnings: which one (for the log's event name,
 * a literal at each call so docs/operations.md can list it), the provider
 * it is about (WARN_PROVIDER) and its text. */
enum warning_kind { WARN_PROVIDER, WARN_PUSH };
struct warning {
    enum warning_kind kind;
    const char *provider;
    const char *msg;
};

static int config_warnings(struct warning *w, int cap)
{
    const struct config *cfg = health_cfg;
    int n = 0;
    if (!cfg)
        return 0;
    /* every registered provider says whether its client is configured */
    const struct provider_ops *ops;
    for (int i = 0; (ops = provider_at(i)) && n < cap; i++) {
        const char *why = ops->unconfigured ? ops->unconfigured(cfg) : NULL;
        if (why)
            w[n++] = (struct warning){WARN_PROVIDER, ops->name, why};
    }
    if (cfg->public_url && strncmp(cfg->public_url, "https://", 8) != 0 && n < cap)
        w[n++] = (struct warning){
            WARN_PUSH, NULL,
            "public_url is not https://: Google sends push notifications only to "
            "HTTPS, so changes are seen at the next poll (poll_interval) "
            "(docs/google-setup.md)"};
    return n;
}

int health_log_warnings(void)
{
    struct warning w[HEALTH_MAX_WARNINGS];
    int n = config_warnings(w, HEALTH_MAX_WARNINGS);
    for (int i = 0; i < n; i++) {
        if (w[i].kind == WARN_PROVIDER)
            log_warn("service.provider_unconfigured", "provider=%s msg=%s", w[i].provider,
                     log_q(w[i].msg));
        else
            log_warn("service.push_unavailable", "msg=%s", log_q(w[i].msg));
    }
    return n;
}

/* Appends one reason per policy without a live version (and one when none
 * is loaded at all) to reasons; returns how many. */
static int policy_reasons(struct buf *reasons, int *count)
{
    struct buf list;
    struct cs_err err = {{0}};
    int bad = 0, loaded = 0;
    buf_init(&list);
    lua_State *L = json_state();
    if (!L || policy_list_json(&list) || !list.data) {
        bad = 1;
        buf_printf(reasons, "%s\"policies: cannot list them (out of memory)\"",
                   (*count)++ ? "," : "");
        goto done;
    }
    int top = lua_gettop(L);
    if (json_decode_object(L, list.data, list.len, &err) == 0) {
        lua_getfield(L, -1, "policies");
        if (lua_istable(L, -1)) {
            lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
            for (lua_Integer i = 1; i <= n; i++) {
                lua_rawgeti(L, -1, i);
                if (lua_istable(L, -1)) {
                    lua_getfield(L, -1, "name");
                    lua_getfield(L, -2, "version");
                    lua_getfield(L, -3, "error");
                    const char *name = lua_type(L, -3) == LUA_TSTRING ? lua_tostring(L, -3) : "?";
                    const char *why = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1)
                                                                      : "not loaded yet";
                    if (lua_type(L, -2) == LUA_TSTRING) {
                        loaded++;
                    } else {
                        char msg[700];
                        snprintf(msg, sizeof msg, "policy '%s' has no live version: %s",
                                 name, why);
                        buf_puts(reasons, (*count)++ ? "," : "");
                        buf_json_strz(reasons, msg);
                        bad = 1;
                    }
                    lua_pop(L, 3);
                }
                lua_pop(L, 1);
            }
        }
    }
    lua_settop(L, top);
    if (loaded == 0 && !bad) {
        char msg[600];
        snprintf(msg, sizeof msg, "no policy is loaded from %s: nothing can be decided "
                 "and no calendar can be added (check the 'policies' setting)",
                 health_cfg ? health_cfg->policies : "the policies directory");
        buf_puts(reasons, (*count)++ ? "," : "");
        buf_json_strz(reasons, msg);
        bad = 1;
    }
done:
    buf_free(&list);
    return bad;
}

int health_render(struct buf *out)
{
    struct buf reasons;
    int count = 0;
    buf_init(&reasons);
    int db = store_healthy();
    if (!db)
        buf_printf(&reasons, "%s\"database: not usable (a query or the probe write "
                   "failed: full disk, read-only file or lost file; see the log)\"",
                   count++ ? "," : "");
    int pol = !policy_reasons(&reasons, &count);
    int ok = db && pol;
    buf_printf(out, "{\"status\":\"%s\",\"database\":%s,\"policies\":%s,\"reasons\":[%s]"
               ",\"warnings\":[", ok ? "ok" : "unhealthy", db ? "true" : "false",
               pol ? "true" : "false", reasons.data ? reasons.data : "");
    struct warning w[HEALTH_MAX_WARNINGS];
    int n = config_warnings(w, HEALTH_MAX_WARNINGS);
    for (int i = 0; i < n; i++) {
        buf_puts(out, i ? "," : "");
        buf_json_strz(out, w[i].msg);
    }
    buf_puts(out, "]}");
    buf_free(&reasons);
    return ok ? 200 : 503;
}
