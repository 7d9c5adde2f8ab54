/* policy_bench.c -- cost of one hook call through the runtime.
 *
 * Loads the shipped default policy from policies/ (run from the repository
 * root) and times policy_decide() for a time change: dispatch, the
 * argument tables and their read-only proxies, the call, the validation,
 * the metrics. Prints the median, p90 and p99 nanoseconds per call over
 * batches of calls.
 *
 * Baseline, same run: the same hook of policies/default.lua called with
 * lua_pcall in a plain Lua state with plain argument tables built per call
 * (no sandbox, no read-only proxies, no limits, no validation): what a
 * policy call costs at the least ("bare lua_pcall").
 *
 *   cc ... -o build/bench/policy_bench bench/policy_bench.c $(LIB_OBJ) $(LDLIBS_ALL)
 *   build/bench/policy_bench [CALLS [--no-bare]]
 */
#include "config.h"
#include "log.h"
#include "policy/policy.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BATCH 1000

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void set_time3(lua_State *L, const char *s, const char *e, const char *t)
{
    lua_createtable(L, 0, 3);
    lua_pushstring(L, s);
    lua_setfield(L, -2, "start");
    lua_pushstring(L, e);
    lua_setfield(L, -2, "end");
    lua_pushstring(L, t);
    lua_setfield(L, -2, "title");
}

/* One bare call: fresh plain tables, the hook, the action read back. */
static int bare_call(lua_State *L, int hook)
{
    lua_pushvalue(L, hook);
    lua_createtable(L, 0, 6);                       /* change */
    lua_pushliteral(L, "time_change");
    lua_setfield(L, -2, "kind");
    lua_pushliteral(L, "push");
    lua_setfield(L, -2, "source");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "past");
    set_time3(L, "2026-11-25T10:00:00Z", "2026-11-25T10:30:00Z", "Intro call");
    lua_setfield(L, -2, "old");
    set_time3(L, "2026-11-25T11:00:00Z", "2026-11-25T11:30:00Z", "Intro call");
    lua_setfield(L, -2, "new");
    lua_createtable(L, 0, 6);                       /* booking */
    lua_pushliteral(L, "bk-1");
    lua_setfield(L, -2, "uid");
    lua_pushliteral(L, "Intro call");
    lua_setfield(L, -2, "title");
    lua_pushliteral(L, "2026-11-25T10:00:00Z");
    lua_setfield(L, -2, "start");
    lua_pushliteral(L, "2026-11-25T10:30:00Z");
    lua_setfield(L, -2, "end");
    lua_pushliteral(L, "accepted");
    lua_setfield(L, -2, "status");
    lua_createtable(L, 0, 1);                       /* ctx */
    lua_pushinteger(L, 1795510800);
    lua_setfield(L, -2, "now");
    if (lua_pcall(L, 3, 1, 0) != LUA_OK)
        return -1;
    lua_getfield(L, -1, "action");
    int ok = lua_type(L, -1) == LUA_TSTRING;
    lua_pop(L, 2);
    return ok ? 0 : -1;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    long calls = argc > 1 ? atol(argv[1]) : 200000;
    struct config cfg;
    struct cs_err err = {{0}};
    if (config_defaults(&cfg))
        return 1;
    log_set_level(LOG_WARN);
    if (policy_engine_start(&cfg, &err)) {
        fprintf(stderr, "policy_bench: %s\n", err.msg);
        return 1;
    }
    struct booking b = {.uid = "bk-1", .calendar_id = 1, .title = "Intro call",
                        .start_ms = 1795600800000LL, .end_ms = 1795602600000LL,
                        .status = "accepted", .event_id = "ev-1",
                        .updated_ms = 1795500000000LL};
    const char *ev = "{\"id\":\"ev-1\",\"status\":\"confirmed\",\"summary\":\"Intro call\","
                     "\"start\":{\"dateTime\":\"2026-11-25T11:00:00Z\"},"
                     "\"end\":{\"dateTime\":\"2026-11-25T11:30:00Z\"}}";
    struct policy_input in = {
        .kind = "time_change", .event_json = ev, .event_len = strlen(ev),
        .old_start_ms = b.start_ms, .old_end_ms = b.end_ms, .old_title = b.title,
        .has_new = 1, .new_start_ms = b.start_ms + 3600000, .new_end_ms = b.end_ms + 3600000,
        .new_title = b.title, .source = "push", .booking = &b,
        .now_ms = 1795510800000LL, .calendar_id = 1, .settings_json = "{}",
    };
    struct policy_runner *r = policy_runner_new(&cfg);
    struct policy_decision d;
    for (int i = 0; i < 1000; i++) /* warm up: state built, caches hot */
        policy_decide(r, "default", &in, &d);
    if (strcmp(d.action, "reschedule") != 0) {
        fprintf(stderr, "policy_bench: unexpected decision %s: %s\n", d.action, d.reason);
        return 1;
    }
    long batches = calls / BATCH > 0 ? calls / BATCH : 1;
    double *per = calloc((size_t)batches, sizeof *per);
    for (long k = 0; k < batches; k++) {
        int64_t t0 = now_ns();
        for (int i = 0; i < BATCH; i++)
            policy_decide(r, "default", &in, &d);
        per[k] = (double)(now_ns() - t0) / BATCH;
    }
    qsort(per, (size_t)batches, sizeof *per, cmp);
    printf("policy_decide(default, time_change): median %.0f ns/call, p90 %.0f, "
           "p99 %.0f (%ld calls)\n", per[batches / 2], per[batches * 9 / 10],
           per[batches * 99 / 100], batches * BATCH);

    /* the baseline (skipped with --no-bare: callgrind counts policy_decide only) */
    if (argc > 2 && strcmp(argv[2], "--no-bare") == 0) {
        free(per);
        policy_runner_free(r);
        policy_engine_stop();
        config_free(&cfg);
        return 0;
    }
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    if (luaL_dofile(L, "policies/default.lua") != LUA_OK || !lua_istable(L, -1)) {
        fprintf(stderr, "policy_bench: bare: %s\n", lua_tostring(L, -1));
        return 1;
    }
    lua_getfield(L, -1, "on_time_change");
    int hook = lua_gettop(L);
    for (int i = 0; i < 1000; i++)
        if (bare_call(L, hook)) {
            fprintf(stderr, "policy_bench: bare call failed\n");
            return 1;
        }
    for (long k = 0; k < batches; k++) {
        int64_t t0 = now_ns();
        for (int i = 0; i < BATCH; i++)
            bare_call(L, hook);
        per[k] = (double)(now_ns() - t0) / BATCH;
    }
    qsort(per, (size_t)batches, sizeof *per, cmp);
    printf("bare lua_pcall: median %.0f ns/call, p90 %.0f, p99 %.0f (%ld calls)\n",
           per[batches / 2], per[batches * 9 / 10], per[batches * 99 / 100], batches * BATCH);
    lua_close(L);
    free(per);
    policy_runner_free(r);
    policy_engine_stop();
    config_free(&cfg);
    return 0;
}
