/* decide.c -- one policy decision (DESIGN §5) and the per-thread runners.
 *
 * pol_decide_with() is the one path of a decision, live (policy_decide
 * through a runner) and dry (`policy test`, cli.c): dispatch to the hook,
 * the arguments (args.c), the call in the sandbox under the limits, the
 * validation of what came back, and the one place every failure becomes
 * flag (policy_fallback). A runner, one per worker thread, keeps a sandbox
 * per policy it used and re-reads the engine's live versions (engine.c)
 * only when its generation moved, so a call takes no lock otherwise.
 */
#include "policy/internal.h"

#include "booking.h"
#include "log.h"
#include "metrics.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const policy_actions[] = {"cancel", "reschedule", "update",
                                             "ignore", "flag", NULL};

struct call {
    const struct policy_input *in;
    struct policy_decision *out;
    int invalid;      /* POLICY_ERR_DECISION, reason in why */
    char why[256];
};

/* Pushes the hook that decides `in`, or returns 0 (= ignore). */
static int policy_push_hook(lua_State *L, const struct policy_input *in)
{
    if (in->past)
        return sandbox_push_hook(L, "on_past");
    if (in->is_instance && sandbox_push_hook(L, "on_instance"))
        return 1;
    if (!in->kind)
        return 0;
    static const char *const hooks[][2] = {
        {"delete", "on_delete"},
        {"time_change", "on_time_change"},
        {"title_change", "on_title_change"},
        {"response", "on_response"},
    };
    for (size_t i = 0; i < sizeof hooks / sizeof hooks[0]; i++)
        if (strcmp(in->kind, hooks[i][0]) == 0)
            return sandbox_push_hook(L, hooks[i][1]);
    return 0; /* no other kind has a hook */
}

/* Copies the string src into dst[size], cut to fit (snprintf "%s" without
 * the format parsing: this runs on every decision). */
static void copy_str(char *dst, size_t size, const char *src)
{
    size_t n = strnlen(src, size - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static void set_decision(struct policy_decision *out, const char *action,
                         const char *reason, size_t rlen)
{
    copy_str(out->action, sizeof out->action, action);
    if (rlen >= sizeof out->reason)
        rlen = sizeof out->reason - 1;
    memcpy(out->reason, reason, rlen);
    out->reason[rlen] = '\0';
}

/* Runs protected (sandbox_pcall): dispatch, arguments, the call, and the
 * validation of what came back, so an allocation failure anywhere is an
 * ordinary error. Reads fields raw: no metamethod runs on the decision. */
static int decide_protected(lua_State *L)
{
    struct call *c = lua_touserdata(L, 1);
    if (!policy_push_hook(L, c->in)) {
        set_decision(c->out, "ignore", "no hook", 7);
        return 0;
    }
    /* ctx.now as fill_ctx makes it (floor of the ms) */
    int64_t now_s = c->in->now_ms / 1000;
    if (c->in->now_ms < 0 && c->in->now_ms % 1000)
        now_s--;
    sandbox_begin_decision(L, now_s, c->in->booking ? c->in->booking->uid
                                                    : c->in->booking_uid);
    pol_args_push(L, c->in);
    lua_call(L, 3, 1);
    int d = lua_gettop(L);
    if (lua_type(L, d) != LUA_TTABLE) {
        c->invalid = 1;
        snprintf(c->why, sizeof c->why, "expected a table {action=..., reason=...}, got %s",
                 luaL_typename(L, d));
        return 0;
    }
    lua_pushliteral(L, "action");
    lua_rawget(L, d);
    lua_pushliteral(L, "reason");
    lua_rawget(L, d);
    size_t alen = 0;
    const char *action = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &alen) : NULL;
    /* compared with its Lua length: "cancel\0x" is not "cancel" */
    int nul = action && strlen(action) != alen;
    int known = 0;
    for (int i = 0; action && !nul && policy_actions[i]; i++)
        if (strcmp(action, policy_actions[i]) == 0)
            known = 1;
    size_t rlen = 0;
    const char *reason = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &rlen) : NULL;
    c->invalid = 1;
    if (!action)
        snprintf(c->why, sizeof c->why, "action must be a string, got %s",
                 luaL_typename(L, -2));
    else if (nul)
        snprintf(c->why, sizeof c->why, "action holds a NUL byte");
    else if (!known)
        snprintf(c->why, sizeof c->why, "unknown action '%.32s' (cancel, reschedule, "
                 "update, ignore or flag)", action);
    else if (!reason)
        snprintf(c->why, sizeof c->why, "reason must be a string, got %s",
                 luaL_typename(L, -1));
    else if (rlen > POLICY_REASON_MAX)
        snprintf(c->why, sizeof c->why, "reason longer than %d bytes", POLICY_REASON_MAX);
    else if (strlen(reason) != rlen)
        snprintf(c->why, sizeof c->why, "reason holds a NUL byte");
    else {
        c->invalid = 0;
        set_decision(c->out, action, reason, rlen);
    }
    return 0;
}

static const char *rc_kind(enum policy_rc rc)
{
    switch (rc) {
    case POLICY_ERR_RUNTIME: return "runtime";
    case POLICY_ERR_INSTRUCTIONS: return "instructions";
    case POLICY_ERR_MEMORY: return "memory";
    case POLICY_ERR_DECISION: return "decision";
    case POLICY_ERR_LOAD: return "load";
    default: return "ok";
    }
}

/* `policy check` reports forced flags itself: no log line for them. */
static _Thread_local int quiet;

void pol_decide_quiet(int on)
{
    quiet = on;
}

/* The one place an error becomes a decision: flag, with the reason,
 * counted per policy and kind. Never a destructive action. */
static void policy_fallback(struct policy_decision *out, enum policy_rc rc,
                            const char *detail, const char *trace)
{
    static const char *const prefix[] = {
        [POLICY_ERR_RUNTIME] = "policy error: ",
        [POLICY_ERR_INSTRUCTIONS] = "policy stopped: ",
        [POLICY_ERR_MEMORY] = "policy stopped: ",
        [POLICY_ERR_DECISION] = "invalid decision: ",
        [POLICY_ERR_LOAD] = "policy unavailable: ",
    };
    snprintf(out->action, sizeof out->action, "flag");
    snprintf(out->reason, sizeof out->reason, "%s%s", prefix[rc], detail);
    out->forced = 1;
    copy_str(out->error, sizeof out->error, rc_kind(rc));
    char lbl[128], series[256];
    snprintf(series, sizeof series,
             "calsync_policy_errors_total{policy=\"%s\",kind=\"%s\"}",
             metrics_label(out->policy, lbl, sizeof lbl), rc_kind(rc));
    metrics_inc(series);
    if (quiet)
        return;
    log_warn("policy.error", "policy=%s version=%s kind=%s reason=%s", log_q(out->policy),
             out->version, rc_kind(rc), log_q(out->reason));
    if (trace && *trace)
        log_debug("policy.error_trace", "policy=%s trace=%s", log_q(out->policy),
                  log_q(trace));
}

/* 1 while a shadow policy decides: not counted as a decision */
static _Thread_local int uncounted;

static void count_decision(const struct policy_decision *out)
{
    if (uncounted)
        return;
    /* the series names of the last policy this thread decided for, so the
     * common case formats nothing */
    static _Thread_local char cached[POLICY_NAME_MAX + 1];
    static _Thread_local char series[5][256];
    int a = 0;
    while (policy_actions[a] && strcmp(policy_actions[a], out->action) != 0)
        a++;
    if (!policy_actions[a])
        return;
    if (strcmp(cached, out->policy) != 0 || !series[0][0]) {
        char lbl[128];
        metrics_label(out->policy, lbl, sizeof lbl);
        for (int i = 0; policy_actions[i]; i++)
            snprintf(series[i], sizeof series[i],
                     "calsync_policy_decisions_total{policy=\"%s\",action=\"%s\"}",
                     lbl, policy_actions[i]);
        snprintf(cached, sizeof cached, "%s", out->policy);
    }
    metrics_inc(series[a]);
}

/* A sandbox with `v` loaded, in *sbp (built when NULL or dead). Decides
 * `in` with it. Always fills *out. */
void pol_decide_with(const struct config *cfg, struct policy_version *v,
                     struct sandbox **sbp, const struct policy_input *in,
                     struct policy_decision *out)
{
    struct sandbox_msg msg = {{0}, {0}};
    double t0 = metrics_clock();
    memset(out, 0, sizeof *out);
    copy_str(out->policy, sizeof out->policy, v->name);
    copy_str(out->version, sizeof out->version, v->version);

    if (*sbp && sandbox_dead(*sbp)) {
        sandbox_free(*sbp);
        *sbp = NULL;
    }
    if (!*sbp) {
        struct cs_err err = {{0}};
        struct sandbox_limits lim = pol_limits_of(cfg);
        struct sandbox *sb = sandbox_new(v->name, &lim, &err);
        if (!sb) {
            policy_fallback(out, POLICY_ERR_LOAD, err.msg, NULL);
            goto done;
        }
        enum sandbox_rc lrc = sandbox_load(sb, v->path, v->src, v->len, &msg);
        if (lrc != SANDBOX_OK) {
            sandbox_free(sb);
            policy_fallback(out, POLICY_ERR_LOAD, msg.text, msg.trace);
            goto done;
        }
        *sbp = sb;
    }

    struct call c = {in, out, 0, ""};
    lua_State *L = sandbox_lua(*sbp);
    int top = lua_gettop(L);
    lua_pushcfunction(L, decide_protected);
    lua_pushlightuserdata(L, &c);
    enum sandbox_rc rc = sandbox_pcall(*sbp, 1, 0, &msg);
    pol_args_release(L);
#ifndef NDEBUG
    if (lua_gettop(L) != top) {
        log_error("policy.stack_dirty", "policy=%s top=%d expected=%d",
                  log_q(v->name), lua_gettop(L), top);
        lua_settop(L, top);
    }
#else
    (void)top;
#endif
    switch (rc) {
    case SANDBOX_OK:
        if (c.invalid)
            policy_fallback(out, POLICY_ERR_DECISION, c.why, NULL);
        break;
    case SANDBOX_ERR_RUNTIME:
        policy_fallback(out, POLICY_ERR_RUNTIME, msg.text, msg.trace);
        break;
    case SANDBOX_ERR_INSTRUCTIONS:
        policy_fallback(out, POLICY_ERR_INSTRUCTIONS, msg.text, msg.trace);
        break;
    case SANDBOX_ERR_MEMORY:
        policy_fallback(out, POLICY_ERR_MEMORY, msg.text, NULL);
        sandbox_free(*sbp); /* rebuilt from the cached source next time */
        *sbp = NULL;
        break;
    }
done:
    metrics_observe("calsync_policy_decision_duration_seconds", metrics_clock() - t0);
    count_decision(out);
}

/* --------------------------------------------------------------- runner */

struct slot {
    char name[POLICY_NAME_MAX + 1];
    struct policy_version *ver;
    struct sandbox *sb;
};

struct policy_runner {
    const struct config *cfg;
    unsigned gen;
    struct slot *slots;
    int n, cap;
};

struct policy_runner *policy_runner_new(const struct config *cfg)
{
    struct policy_runner *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->cfg = cfg;
    r->gen = pol_eng_gen() - 1; /* look at the engine on first use */
    return r;
}

void policy_runner_free(struct policy_runner *r)
{
    if (!r)
        return;
    for (int i = 0; i < r->n; i++) {
        sandbox_free(r->slots[i].sb);
        pol_version_unref(r->slots[i].ver);
    }
    free(r->slots);
    free(r);
}

/* Brings every slot to the engine's live version. */
static void runner_refresh(struct policy_runner *r, unsigned gen)
{
    pol_eng_lock();
    for (int i = 0; i < r->n; i++) {
        struct slot *s = &r->slots[i];
        struct policy_version *live = pol_eng_live_locked(s->name);
        if (live == s->ver)
            continue;
        pol_version_unref(s->ver);
        s->ver = pol_version_ref(live);
        sandbox_free(s->sb);
        s->sb = NULL;
    }
    pol_eng_unlock();
    r->gen = gen;
}

static struct slot *runner_slot(struct policy_runner *r, const char *name)
{
    for (int i = 0; i < r->n; i++)
        if (strcmp(r->slots[i].name, name) == 0)
            return &r->slots[i];
    if (strlen(name) > POLICY_NAME_MAX)
        return NULL;
    if (r->n == r->cap) {
        int cap = r->cap ? r->cap * 2 : 4;
        struct slot *p = realloc(r->slots, (size_t)cap * sizeof *p);
        if (!p)
            return NULL;
        r->slots = p;
        r->cap = cap;
    }
    struct slot *s = &r->slots[r->n];
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    pol_eng_lock();
    s->ver = pol_version_ref(pol_eng_live_locked(name));
    pol_eng_unlock();
    if (!s->ver)
        return NULL;
    r->n++;
    return s;
}

int policy_decide(struct policy_runner *r, const char *policy_name,
                  const struct policy_input *in, struct policy_decision *out)
{
    unsigned gen = pol_eng_gen();
    if (gen != r->gen)
        runner_refresh(r, gen);
    struct slot *s = runner_slot(r, policy_name);
    if (!s || !s->ver) {
        memset(out, 0, sizeof *out);
        snprintf(out->action, sizeof out->action, "flag");
        snprintf(out->policy, sizeof out->policy, "%s", policy_name);
        snprintf(out->reason, sizeof out->reason, "policy unavailable: no live "
                 "version of policy '%.63s'", policy_name);
        out->forced = 1;
        copy_str(out->error, sizeof out->error, "load");
        return -1;
    }
    pol_decide_with(r->cfg, s->ver, &s->sb, in, out);
    return 0;
}


int policy_decide_shadow(struct policy_runner *r, const char *policy_name,
                         const struct policy_input *in, struct policy_decision *out)
{
    uncounted = 1;
    int rc = policy_decide(r, policy_name, in, out);
    uncounted = 0;
    return rc;
}
