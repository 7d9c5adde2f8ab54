/* args.c -- the arguments of a policy call: change, booking, ctx
 * (DESIGN §5, docs/internals/policy.md "Arguments").
 *
 * The arguments of a call are built once per state and refilled per
 * call. The skeleton, a table in the
 * registry under &args_key, holds per frozen argument its target (a table
 * whose every field is rewritten before it can be read again), the
 * metatable of its proxies (fixed) and the proxy handed to the current
 * call; the field names, interned once; the call's state (struct
 * args_state). A call retires the previous call's proxies and makes new
 * ones (one empty table each), so a proxy a policy kept raises instead of
 * showing another call's data.
 *
 * change and ctx are filled before the call. change.old, .new, .instance,
 * .event, ctx.calendar, .settings and the fields of booking are made on
 * first read (lazy_index): a policy pays only for what it reads.
 */
#include "policy/internal.h"

#include "booking.h"

#include <string.h>

enum arg { ARG_OLD, ARG_NEW, ARG_INSTANCE, ARG_CALENDAR, ARG_BOOKING, ARG_CHANGE,
           ARG_CTX, ARG_N };

/* The field names, interned once per state and kept in the skeleton: a
 * raw set with a key from there hashes and compares nothing. */
enum key { K_START, K_END, K_TITLE, K_SERIES_ID, K_ORIGINAL_START, K_ID, K_UID,
           K_CALENDAR_ID, K_STATUS, K_NEEDS_REVIEW, K_EVENT_ID, K_CANCELLED_BY,
           K_CANCEL_REASON, K_UPDATED_AT, K_KIND, K_OLD, K_NEW, K_INSTANCE,
           K_PAST, K_SOURCE, K_EVENT, K_NOW, K_CALENDAR, K_SETTINGS, K_ATTENDEES, K_N };
static const char *const key_names[K_N] = {
    "start", "end", "title", "series_id", "original_start", "id", "uid",
    "calendar_id", "status", "needs_review", "event_id", "cancelled_by",
    "cancel_reason", "updated_at", "kind", "old", "new", "instance", "past",
    "source", "event", "now", "calendar", "settings", "attendees",
};

#define SK_TARGET(a) (1 + (a))
#define SK_MT(a) (1 + ARG_N + (a))
#define SK_PROXY(a) (1 + 2 * ARG_N + (a))
#define SK_STATE (1 + 3 * ARG_N)   /* struct args_state (full userdata) */
#define SK_KEY(k) (2 + 3 * ARG_N + (k))
#define SK_TIME(i) (SK_KEY(K_N) + (i)) /* this call's time texts, see set_time */
#define SK_TIMES 8
#define SK_LEN SK_TIME(SK_TIMES - 1)

static char args_key;

/* The times this call formatted so far: the text of ms[i] is in the
 * skeleton at SK_TIME(i). change.old and booking share their times (live,
 * old is the booking's span), so each is formatted and interned once. */
struct times {
    int64_t ms[SK_TIMES];
    int n;
};

struct args_state {
    const struct policy_input *in; /* the running call's; NULL between calls */
    struct times tm;
    int booking_filled; /* the booking target holds a call's fields */
};

static const int arg_fields[ARG_N] = {
    [ARG_OLD] = 3, [ARG_NEW] = 4, [ARG_INSTANCE] = 2, [ARG_CALENDAR] = 1,
    [ARG_BOOKING] = 12, [ARG_CHANGE] = 8, [ARG_CTX] = 4,
};

static int lazy_index(lua_State *L);
static int push_lazy_json(lua_State *L, const char *text, size_t len, int settings);

/* Gives the target at the top the fields of `keys` (made by lazy_index on
 * first read). sk: the skeleton, an upvalue of lazy_index. */
static void make_lazy(lua_State *L, int sk, enum arg a, const enum key *keys, int n)
{
    lua_createtable(L, 0, 2);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, sk, SK_KEY(keys[i]));
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "__lazykeys");
    lua_pushvalue(L, sk);
    lua_pushinteger(L, a);
    lua_pushcclosure(L, lazy_index, 2);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -2);
}

static const enum key booking_keys[] = {
    K_UID, K_CALENDAR_ID, K_TITLE, K_START, K_END, K_STATUS, K_NEEDS_REVIEW,
    K_EVENT_ID, K_ORIGINAL_START, K_CANCELLED_BY, K_CANCEL_REASON, K_UPDATED_AT,
};
#define BOOKING_KEYS ((int)(sizeof booking_keys / sizeof booking_keys[0]))

/* Pushes a new skeleton (also stored in the registry). Its memory belongs
 * to the state. */
static void args_build(lua_State *L)
{
    static const enum key change_lazy[] = {K_EVENT, K_OLD, K_NEW, K_INSTANCE};
    static const enum key ctx_lazy[] = {K_SETTINGS, K_CALENDAR};
    lua_createtable(L, SK_LEN, 0);
    int sk = lua_gettop(L);
    for (int k = 0; k < K_N; k++) {
        lua_pushstring(L, key_names[k]);
        lua_rawseti(L, sk, SK_KEY(k));
    }
    struct args_state *st = lua_newuserdatauv(L, sizeof *st, 0);
    memset(st, 0, sizeof *st);
    lua_rawseti(L, sk, SK_STATE);
    for (int a = 0; a < ARG_N; a++) {
        lua_createtable(L, 0, arg_fields[a]);
        if (a == ARG_CHANGE)
            make_lazy(L, sk, ARG_CHANGE, change_lazy, 4);
        else if (a == ARG_CTX)
            make_lazy(L, sk, ARG_CTX, ctx_lazy, 2);
        else if (a == ARG_BOOKING)
            make_lazy(L, sk, ARG_BOOKING, booking_keys, BOOKING_KEYS);
        sandbox_proxy_mt(L, -1);
        lua_rawseti(L, sk, SK_MT(a));
        lua_rawseti(L, sk, SK_TARGET(a));
    }
    lua_rawgeti(L, sk, SK_TARGET(ARG_CTX));
    sandbox_push_log(L);
    lua_setfield(L, -2, "log"); /* the same every call */
    lua_pop(L, 1);
    lua_pushvalue(L, sk);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &args_key);
}

static struct args_state *args_state(lua_State *L, int sk)
{
    lua_rawgeti(L, sk, SK_STATE);
    struct args_state *st = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return st;
}

/* The fillers below write field k of the target at t with a raw set. The
 * skeleton is at sk. */
static void push_key(lua_State *L, int sk, enum key k)
{
    lua_rawgeti(L, sk, SK_KEY(k));
}

/* v, or nil when v is NULL */
static void set_str(lua_State *L, int sk, int t, enum key k, const char *v)
{
    push_key(L, sk, k);
    if (v)
        lua_pushstring(L, v);
    else
        lua_pushnil(L);
    lua_rawset(L, t);
}

static void set_time(lua_State *L, int sk, int t, enum key k, int64_t ms,
                     struct times *tm)
{
    push_key(L, sk, k);
    if (ms == POLICY_TIME_NONE) {
        lua_pushnil(L);
        lua_rawset(L, t);
        return;
    }
    for (int i = 0; i < tm->n; i++) {
        if (tm->ms[i] == ms) {
            lua_rawgeti(L, sk, SK_TIME(i));
            lua_rawset(L, t);
            return;
        }
    }
    char ts[TIME_RFC3339_MAX];
    time_format_rfc3339(ms, ts);
    /* not lua_pushstring: its cache is keyed by the buffer's address, the
     * same for every time, so it would compare and miss */
    lua_pushlstring(L, ts, strlen(ts));
    if (tm->n < SK_TIMES) {
        lua_pushvalue(L, -1);
        lua_rawseti(L, sk, SK_TIME(tm->n));
        tm->ms[tm->n++] = ms;
    }
    lua_rawset(L, t);
}

static void set_int(lua_State *L, int sk, int t, enum key k, lua_Integer v)
{
    push_key(L, sk, k);
    lua_pushinteger(L, v);
    lua_rawset(L, t);
}

static void set_bool(lua_State *L, int sk, int t, enum key k, int v)
{
    push_key(L, sk, k);
    lua_pushboolean(L, v);
    lua_rawset(L, t);
}

/* Pushes the target of argument a. */
static int arg_target(lua_State *L, int sk, enum arg a)
{
    lua_rawgeti(L, sk, SK_TARGET(a));
    return lua_gettop(L);
}

/* Replaces the target at the top with a new proxy of it, recorded as the
 * call's (to be retired by the next call). */
static void arg_proxy(lua_State *L, int sk, enum arg a)
{
    lua_rawgeti(L, sk, SK_MT(a));
    sandbox_proxy(L, -1);
    lua_replace(L, -3);
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_rawseti(L, sk, SK_PROXY(a));
}

/* Pushes a proxy of the nested argument a filled from `in`, or nothing
 * (returns 0) when the call has no such argument. */
static int push_nested(lua_State *L, int sk, enum arg a, const struct policy_input *in,
                       struct times *tm)
{
    int t;
    switch (a) {
    case ARG_OLD:
    case ARG_NEW:
        if (a == ARG_OLD ? in->no_old : !in->has_new)
            return 0;
        t = arg_target(L, sk, a);
        set_time(L, sk, t, K_START, a == ARG_OLD ? in->old_start_ms : in->new_start_ms, tm);
        set_time(L, sk, t, K_END, a == ARG_OLD ? in->old_end_ms : in->new_end_ms, tm);
        set_str(L, sk, t, K_TITLE, a == ARG_OLD ? in->old_title : in->new_title);
        if (a == ARG_NEW) {
            /* change.new.attendees: {email, response} each (DESIGN §5) */
            push_key(L, sk, K_ATTENDEES);
            if (!push_lazy_json(L, in->new_attendees,
                                in->new_attendees ? strlen(in->new_attendees) : 0, 0))
                lua_pushnil(L);
            lua_rawset(L, t);
        }
        break;
    case ARG_INSTANCE:
        if (!in->is_instance)
            return 0;
        t = arg_target(L, sk, a);
        set_str(L, sk, t, K_SERIES_ID, in->series_id);
        set_time(L, sk, t, K_ORIGINAL_START, in->original_start_ms, tm);
        break;
    case ARG_CALENDAR:
        t = arg_target(L, sk, a);
        set_int(L, sk, t, K_ID, in->calendar_id);
        break;
    default:
        return 0;
    }
    arg_proxy(L, sk, a);
    return 1;
}

/* Every field of booking b into the target at t (absent ones nil). */
static void fill_booking_fields(lua_State *L, int sk, int t, const struct booking *b,
                                struct times *tm)
{
    set_str(L, sk, t, K_UID, b->uid);
    set_int(L, sk, t, K_CALENDAR_ID, b->calendar_id);
    set_str(L, sk, t, K_TITLE, b->title);
    set_time(L, sk, t, K_START, b->start_ms, tm);
    set_time(L, sk, t, K_END, b->end_ms, tm);
    set_str(L, sk, t, K_STATUS, b->status);
    set_bool(L, sk, t, K_NEEDS_REVIEW, b->needs_review);
    set_str(L, sk, t, K_EVENT_ID, b->event_id);
    set_time(L, sk, t, K_ORIGINAL_START, b->has_original ? b->original_start_ms
                                                         : POLICY_TIME_NONE, tm);
    set_str(L, sk, t, K_CANCELLED_BY, b->cancelled_by);
    set_str(L, sk, t, K_CANCEL_REASON, b->cancel_reason);
    set_time(L, sk, t, K_UPDATED_AT, b->updated_ms, tm);
}

/* Pushes the deep read-only decoding of text, or returns 0. settings:
 * the policy's defaults are filled in first (DESIGN §5). */
static int push_lazy_json(lua_State *L, const char *text, size_t len, int settings)
{
    if (!text)
        return 0;
    sandbox_push_json(L, text, len);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return 0;
    }
    if (lua_type(L, -1) == LUA_TTABLE) {
        if (settings)
            sandbox_settings_defaults(L);
        sandbox_readonly(L);
    }
    return 1;
}

/* __index of the change, ctx and booking targets (upvalues: the skeleton,
 * the argument; args: target, key): makes a field of the running call on
 * its first read and raw-sets it, so it is made once per call (booking:
 * all its fields at once). They are reset to nil before the next call.
 * Policy code cannot reach this function. */
static int lazy_index(lua_State *L)
{
    int sk = lua_upvalueindex(1);
    enum arg a = (enum arg)lua_tointeger(L, lua_upvalueindex(2));
    struct args_state *st = args_state(L, sk);
    const struct policy_input *in = st->in;
    if (!in || lua_type(L, 2) != LUA_TSTRING)
        return 0;
    if (a == ARG_BOOKING) {
        /* the first read fills every field; a miss after is an absent one */
        if (st->booking_filled || !in->booking)
            return 0;
        st->booking_filled = 1; /* first: even a fill cut short is emptied */
        fill_booking_fields(L, sk, lua_absindex(L, 1), in->booking, &st->tm);
        lua_pushvalue(L, 2);
        lua_rawget(L, 1);
        return 1;
    }
    const char *k = lua_tostring(L, 2);
    int made = 0;
    if (a == ARG_CHANGE) {
        if (strcmp(k, "event") == 0)
            made = push_lazy_json(L, in->event_json, in->event_len, 0);
        else if (strcmp(k, "old") == 0)
            made = push_nested(L, sk, ARG_OLD, in, &st->tm);
        else if (strcmp(k, "new") == 0)
            made = push_nested(L, sk, ARG_NEW, in, &st->tm);
        else if (strcmp(k, "instance") == 0)
            made = push_nested(L, sk, ARG_INSTANCE, in, &st->tm);
    } else if (strcmp(k, "settings") == 0) {
        const char *s = in->settings_json ? in->settings_json : "{}";
        made = push_lazy_json(L, s, strlen(s), 1);
    } else if (strcmp(k, "calendar") == 0) {
        made = push_nested(L, sk, ARG_CALENDAR, in, &st->tm);
    }
    if (!made)
        return 0;
    lua_pushvalue(L, 2);
    lua_pushvalue(L, -2);
    lua_rawset(L, 1);
    return 1;
}

/* Pushes the proxy of change. */
static void fill_change(lua_State *L, int sk, const struct policy_input *in)
{
    int t = arg_target(L, sk, ARG_CHANGE);
    set_str(L, sk, t, K_KIND, in->kind);
    set_bool(L, sk, t, K_PAST, in->past);
    set_str(L, sk, t, K_SOURCE, in->source);
    /* made on first read (lazy_index) */
    set_str(L, sk, t, K_EVENT, NULL);
    set_str(L, sk, t, K_OLD, NULL);
    set_str(L, sk, t, K_NEW, NULL);
    set_str(L, sk, t, K_INSTANCE, NULL);
    arg_proxy(L, sk, ARG_CHANGE);
}

/* Pushes booking: the fields of GET /v1/bookings/{uid} (booking_json), as
 * Lua values. Live, the fields are made on first read (lazy_index); the
 * target is emptied here if a call before filled it. */
static void fill_booking(lua_State *L, int sk, const struct policy_input *in,
                         struct args_state *st)
{
    if (!in->booking) {
        if (in->booking_json)
            sandbox_push_json(L, in->booking_json, in->booking_len);
        else
            lua_pushnil(L);
        if (lua_type(L, -1) == LUA_TTABLE)
            sandbox_readonly(L);
        return;
    }
    int t = arg_target(L, sk, ARG_BOOKING);
    if (st->booking_filled) {
        for (int i = 0; i < BOOKING_KEYS; i++)
            set_str(L, sk, t, booking_keys[i], NULL);
        st->booking_filled = 0;
    }
    arg_proxy(L, sk, ARG_BOOKING);
}

/* Pushes the proxy of ctx. */
static void fill_ctx(lua_State *L, int sk, const struct policy_input *in)
{
    int t = arg_target(L, sk, ARG_CTX);
    int64_t s = in->now_ms / 1000;
    if (in->now_ms < 0 && in->now_ms % 1000)
        s--; /* floor */
    set_int(L, sk, t, K_NOW, s);
    /* made on first read (lazy_index) */
    set_str(L, sk, t, K_SETTINGS, NULL);
    set_str(L, sk, t, K_CALENDAR, NULL);
    arg_proxy(L, sk, ARG_CTX);
}

/* Pushes change, booking, ctx for `in`, refilling the state's skeleton
 * (built on the first call). The previous call's proxies are retired
 * first. `in` must stay valid until pol_args_release(). */
void pol_args_push(lua_State *L, const struct policy_input *in)
{
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &args_key) != LUA_TTABLE) {
        lua_pop(L, 1);
        args_build(L);
    }
    int sk = lua_gettop(L);
    sandbox_proxy_retire(L, sk, SK_PROXY(0), SK_PROXY(ARG_N - 1));
    struct args_state *st = args_state(L, sk);
    st->in = in;
    st->tm.n = 0;
    fill_change(L, sk, in);
    fill_booking(L, sk, in, st);
    fill_ctx(L, sk, in);
    lua_remove(L, sk);
}

/* After a call, on every path: the state must not keep the caller's input.
 * No allocation, cannot raise. */
void pol_args_release(lua_State *L)
{
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &args_key) == LUA_TTABLE) {
        struct args_state *st = args_state(L, lua_gettop(L));
        if (st)
            st->in = NULL;
    }
    lua_pop(L, 1);
}


/* ----------------------------------------------- the inputs as a document
 * policy_input_json (policy.h): the arguments above, from the same struct
 * policy_input and in the same field order, as the CHANGE.json document
 * `policy test` and `policy replay` read (pol_change_parse in cli.c is its
 * inverse). One pass over the struct, no printf: it runs once per
 * decision (apply.c records it). Each instant is formatted once (live,
 * change.old is the booking's span). */

struct doc {
    struct buf *o;
    int rc;                      /* any append failed: out of memory */
    int64_t ms[SK_TIMES];        /* the instants formatted so far */
    char txt[SK_TIMES][TIME_RFC3339_MAX];
    int n;
};

static void d_raw(struct doc *d, const char *s, size_t n)
{
    d->rc |= buf_append(d->o, s, n);
}

#define D_LIT(d, s) d_raw((d), (s), sizeof(s) - 1)

/* `,"name":` (no comma when first) */
static void d_key(struct doc *d, int first, enum key k)
{
    if (!first)
        D_LIT(d, ",");
    D_LIT(d, "\"");
    d_raw(d, key_names[k], strlen(key_names[k]));
    D_LIT(d, "\":");
}

static void d_int(struct doc *d, int64_t v)
{
    char t[24], *p = t + sizeof t;
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    do
        *--p = (char)('0' + u % 10);
    while (u /= 10);
    if (v < 0)
        *--p = '-';
    d_raw(d, p, (size_t)(t + sizeof t - p));
}

static void d_bool(struct doc *d, int v)
{
    if (v)
        D_LIT(d, "true");
    else
        D_LIT(d, "false");
}

/* A string field; left out when v is NULL. Returns 1 when written. */
static int d_str(struct doc *d, int first, enum key k, const char *v)
{
    if (!v)
        return 0;
    d_key(d, first, k);
    d->rc |= buf_json_strz(d->o, v);
    return 1;
}

/* A time field; left out when ms is POLICY_TIME_NONE. 1 when written. */
static int d_time(struct doc *d, int first, enum key k, int64_t ms)
{
    if (ms == POLICY_TIME_NONE)
        return 0;
    int i = 0;
    while (i < d->n && d->ms[i] != ms)
        i++;
    char one[TIME_RFC3339_MAX], *ts = one;
    if (i < d->n) {
        ts = d->txt[i];
    } else {
        if (d->n < SK_TIMES) {
            ts = d->txt[d->n];
            d->ms[d->n++] = ms;
        }
        time_format_rfc3339(ms, ts);
    }
    d_key(d, first, k);
    D_LIT(d, "\"");
    d_raw(d, ts, strlen(ts));
    D_LIT(d, "\"");
    return 1;
}

/* change.old / change.new: {start, end, title[, attendees]} */
static void d_span(struct doc *d, enum key k, int64_t s, int64_t e, const char *title,
                   const char *attendees)
{
    d_key(d, 0, k);
    D_LIT(d, "{");
    int first = !d_time(d, 1, K_START, s);
    first &= !d_time(d, first, K_END, e);
    first &= !d_str(d, first, K_TITLE, title);
    if (attendees) {
        /* JSON text as the policy decodes it (change.new.attendees) */
        d_key(d, first, K_ATTENDEES);
        d_raw(d, attendees, strlen(attendees));
    }
    D_LIT(d, "}");
}

int policy_input_json(const struct policy_input *in, struct buf *out)
{
    struct doc d = {.o = out};
    const struct booking *b = in->booking;
    /* the event's JSON and about 600 bytes of fields: one allocation */
    d.rc |= buf_reserve(out, in->event_len + 1024);
    D_LIT(&d, "{\"change\":{\"kind\":");
    d.rc |= buf_json_strz(out, in->kind);
    if (in->event_json) {
        d_key(&d, 0, K_EVENT);
        d_raw(&d, in->event_json, in->event_len);
    }
    if (!in->no_old)
        d_span(&d, K_OLD, in->old_start_ms, in->old_end_ms, in->old_title, NULL);
    if (in->has_new)
        d_span(&d, K_NEW, in->new_start_ms, in->new_end_ms, in->new_title,
               in->new_attendees);
    if (in->is_instance) {
        d_key(&d, 0, K_INSTANCE);
        D_LIT(&d, "{\"series_id\":");
        d.rc |= buf_json_strz(out, in->series_id);
        d_time(&d, 0, K_ORIGINAL_START, in->original_start_ms);
        D_LIT(&d, "}");
    }
    d_key(&d, 0, K_PAST);
    d_bool(&d, in->past);
    d_str(&d, 0, K_SOURCE, in->source);
    D_LIT(&d, "}");
    if (b) {
        /* the twelve fields of booking_keys, absent ones left out */
        D_LIT(&d, ",\"booking\":{\"uid\":");
        d.rc |= buf_json_strz(out, b->uid);
        d_key(&d, 0, K_CALENDAR_ID);
        d_int(&d, b->calendar_id);
        d_str(&d, 0, K_TITLE, b->title);
        d_time(&d, 0, K_START, b->start_ms);
        d_time(&d, 0, K_END, b->end_ms);
        d_str(&d, 0, K_STATUS, b->status);
        d_key(&d, 0, K_NEEDS_REVIEW);
        d_bool(&d, b->needs_review);
        d_str(&d, 0, K_EVENT_ID, b->event_id);
        if (b->has_original)
            d_time(&d, 0, K_ORIGINAL_START, b->original_start_ms);
        d_str(&d, 0, K_CANCELLED_BY, b->cancelled_by);
        d_str(&d, 0, K_CANCEL_REASON, b->cancel_reason);
        d_time(&d, 0, K_UPDATED_AT, b->updated_ms);
        D_LIT(&d, "}");
    } else if (in->booking_json) {
        D_LIT(&d, ",\"booking\":");
        d_raw(&d, in->booking_json, in->booking_len);
    }
    /* ctx.now as the policy got it: whole seconds (floor), nothing lost */
    int64_t now_s = in->now_ms / 1000;
    if (in->now_ms < 0 && in->now_ms % 1000)
        now_s--;
    D_LIT(&d, ",\"now\":");
    d_int(&d, now_s);
    D_LIT(&d, ",\"settings\":");
    const char *s = in->settings_json ? in->settings_json : "{}";
    d_raw(&d, s, strlen(s));
    D_LIT(&d, ",\"calendar_id\":");
    d_int(&d, in->calendar_id);
    D_LIT(&d, "}");
    return d.rc ? -1 : 0;
}
