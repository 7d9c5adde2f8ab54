/* cli.c -- `calsync policy check [DIR|FILE]` and `calsync policy test
 * POLICY CHANGE.json` (DESIGN §3).
 *
 * Both load a file exactly as the engine does (pol_compile_check: the
 * same sandbox and load check); `policy test` builds a struct
 * policy_input from CHANGE.json and decides through pol_decide_with(),
 * the function live decisions use, so a dry run and a live call take the
 * same path.
 */
#include "policy/internal.h"

#include "json.h"

#include <errno.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ------------------------------------------------------- policy check */

struct bad_names {
    const char *dir;
    int n;
};

static void report_bad_name(const char *file, void *ud)
{
    struct bad_names *b = ud;
    fprintf(stderr, "%s/%s:1: invalid policy name (use letters, digits, '_' "
            "or '-', at most %d)\n", b->dir, file, POLICY_NAME_MAX);
    b->n++;
}

static void print_finding(const char *m, void *ud)
{
    fprintf(stderr, "%s\n", m);
    (*(int *)ud)++;
}

/* The sample changes `policy check` decides (docs/policies.md): every kind,
 * past or not, an occurrence or not, on a booking a week after a fixed now
 * (so the output never depends on the date), with the settings of a new
 * calendar ({}), in the real sandbox and dispatch. */
#define SAMPLE_NOW_MS INT64_C(1767600000000) /* 2026-01-05T08:00:00Z, a Monday */
#define SAMPLE_DAY_MS INT64_C(86400000)

/* Decides the samples with the policy src; prints each different forced
 * flag (an error, a limit hit, an invalid decision) as
 * "file: on a sample <change>: <reason>". The number printed. */
static int check_samples(const struct config *cfg, const char *name, const char *path,
                         char *src, size_t len, const char *hash)
{
    static const char *const kinds[] = {"delete", "time_change", "title_change"};
    static const char booking[] =
        "{\"uid\":\"sample-1\",\"calendar_id\":1,\"title\":\"Intro call\","
        "\"start\":\"2026-01-12T10:00:00Z\",\"end\":\"2026-01-12T10:30:00Z\","
        "\"status\":\"accepted\",\"needs_review\":false,\"event_id\":\"ev-1\","
        "\"updated_at\":\"2026-01-05T07:00:00Z\"}";
    static const char event[] = "{\"id\":\"ev-1\",\"status\":\"confirmed\","
                                "\"summary\":\"Intro call (moved)\"}";
    struct policy_version v;
    struct sandbox *sb = NULL;
    char seen[8][sizeof ((struct policy_decision *)0)->reason];
    int nseen = 0, printed = 0;
    memset(&v, 0, sizeof v);
    snprintf(v.name, sizeof v.name, "%s", name);
    snprintf(v.version, sizeof v.version, "%s", hash);
    v.path = (char *)path;
    v.src = src;
    v.len = len;
    pol_decide_quiet(1);
    for (int k = 0; k < 3; k++)
        for (int past = 0; past < 2; past++)
            for (int inst = 0; inst < 2; inst++) {
                int64_t start = INT64_C(1768212000000); /* the booking's */
                struct policy_input in;
                memset(&in, 0, sizeof in);
                in.kind = kinds[k];
                in.event_json = event;
                in.event_len = sizeof event - 1;
                in.old_start_ms = start;
                in.old_end_ms = start + 1800000;
                in.old_title = "Intro call";
                in.has_new = k != 0;
                in.new_start_ms = start + (k == 1 ? SAMPLE_DAY_MS : 0);
                in.new_end_ms = in.new_start_ms + 1800000;
                in.new_title = k == 2 ? "Intro call (moved)" : "Intro call";
                in.is_instance = inst;
                in.series_id = inst ? "series-1" : NULL;
                in.original_start_ms = start;
                in.past = past;
                in.source = "push";
                in.booking_json = booking;
                in.booking_len = sizeof booking - 1;
                in.booking_uid = "sample-1";
                in.now_ms = past ? start + 7 * SAMPLE_DAY_MS : SAMPLE_NOW_MS;
                in.calendar_id = 1;
                in.settings_json = "{}";
                struct policy_decision d;
                pol_decide_with(cfg, &v, &sb, &in, &d);
                if (!d.forced)
                    continue;
                int dup = 0;
                for (int i = 0; i < nseen && !dup; i++)
                    dup = strcmp(seen[i], d.reason) == 0;
                if (dup)
                    continue;
                if (nseen < 8)
                    snprintf(seen[nseen++], sizeof seen[0], "%s", d.reason);
                fprintf(stderr, "%s: on a sample %s change (%s%s): %s\n", path, kinds[k],
                        past ? "past" : "not past", inst ? ", an occurrence" : "", d.reason);
                printed++;
            }
    pol_decide_quiet(0);
    sandbox_free(sb);
    return printed;
}

/* Checks one file; prints its line. 0 good, 1 bad. Beyond loading it
 * (the engine's check), its text is linted (sandbox_lint) and every hook
 * decides sample changes (check_samples): what would surface live as a
 * flag is reported now. */
static int check_file(const struct config *cfg, const char *path)
{
    struct cs_err err = {{0}};
    struct sandbox_msg msg = {{0}, {0}};
    char *src = NULL;
    size_t len = 0;
    char hash[13];
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t bl = strlen(base);
    char name[POLICY_NAME_MAX + 1];
    snprintf(name, sizeof name, "%.*s", (int)(bl > 4 ? bl - 4 : bl), base);

    if (pol_file_read_policy(path, path, &src, &len, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    int rc = 1, found = 0;
    if (policy_version_of(src, len, hash)) {
        fprintf(stderr, "%s: cannot hash\n", path);
    } else if (pol_compile_check(cfg, name, path, src, len, &msg)) {
        fprintf(stderr, "%s\n", msg.text);
    } else {
        struct sandbox_limits lim = pol_limits_of(cfg);
        struct sandbox *sb = sandbox_new(name, &lim, &err);
        if (!sb) {
            fprintf(stderr, "%s:1: %s\n", path, err.msg);
            found++;
        } else if (sandbox_lint(sb, path, src, len, print_finding, &found, &msg) !=
                   SANDBOX_OK) {
            /* a file too long to lint within one call's limits: a note,
             * not a failure (it loaded, and the samples still run) */
            fprintf(stderr, "%s:1: note: lint not finished: %s\n", path, msg.text);
        }
        sandbox_free(sb);
        found += check_samples(cfg, name, path, src, len, hash);
        if (found) {
            fprintf(stderr, "%s: loads, but %d problem(s) found\n", path, found);
        } else {
            printf("%s: ok (version %s)\n", path, hash);
            rc = 0;
        }
    }
    free(src);
    return rc;
}

int policy_cmd_check(const struct config *cfg, const char *target)
{
    const char *t = target ? target : cfg->policies;
    struct stat st;
    if (stat(t, &st)) {
        fprintf(stderr, "calsync: policy check: %s: %s\n", t, strerror(errno));
        return 1;
    }
    if (!S_ISDIR(st.st_mode)) {
        int rc = check_file(cfg, t);
        fflush(stdout);
        return rc;
    }
    struct cs_err err = {{0}};
    char **names = NULL;
    int bad = 0;
    struct bad_names bn = {t, 0};
    int n = pol_file_scan_dir(t, &names, &err, report_bad_name, &bn);
    if (n < 0) {
        fprintf(stderr, "calsync: policy check: %s\n", err.msg);
        return 1;
    }
    bad = bn.n;
    for (int i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s.lua", t, names[i]);
        bad += check_file(cfg, path);
        free(names[i]);
    }
    free(names);
    if (n == 0 && bn.n == 0)
        printf("%s: no policy files\n", t);
    printf("%d file(s) checked, %d failed\n", n + bn.n, bad);
    fflush(stdout);
    return bad ? 1 : 0;
}

/* ---------------------------------------------------------- policy test */

struct dry_run {
    struct policy_input in;
    struct buf event, booking, settings, attendees;
    char *kind, *source, *old_title, *new_title, *series_id, *uid;
};

static void dry_run_free(struct dry_run *d)
{
    buf_free(&d->event);
    buf_free(&d->booking);
    buf_free(&d->settings);
    buf_free(&d->attendees);
    free(d->kind);
    free(d->source);
    free(d->old_title);
    free(d->new_title);
    free(d->series_id);
    free(d->uid);
}

/* obj[key] as an optional RFC 3339 time: 1 set, 0 absent, -1 bad. */
static int get_time(lua_State *L, int obj, const char *where, const char *key,
                    int64_t *ms, struct cs_err *err)
{
    const char *s;
    size_t n;
    int r = json_get_str(L, obj, key, &s, &n, err);
    if (r <= 0) {
        if (r < 0)
            cs_err_set(err, "%s.%s must be an RFC 3339 string", where, key);
        return r;
    }
    if (time_parse_rfc3339(s, n, ms) && time_parse_date(s, n, ms))
        return cs_err_set(err, "%s.%s: not an RFC 3339 time: %.64s", where, key, s);
    return 1;
}

static int get_dup(lua_State *L, int obj, const char *where, const char *key,
                   char **out, struct cs_err *err)
{
    const char *s;
    size_t n;
    int r = json_get_str(L, obj, key, &s, &n, err);
    if (r < 0)
        return cs_err_set(err, "%s.%s must be a string", where, key);
    if (r == 1 && !(*out = strndup(s, n)))
        return cs_err_set(err, "out of memory");
    return 0;
}

/* The {start, end, title} table at the top of L. */
static int get_span(lua_State *L, const char *where, int64_t *start, int64_t *end,
                    char **title, struct cs_err *err)
{
    int t = lua_gettop(L);
    *start = *end = POLICY_TIME_NONE;
    if (get_time(L, t, where, "start", start, err) < 0 ||
        get_time(L, t, where, "end", end, err) < 0 ||
        get_dup(L, t, where, "title", title, err))
        return -1;
    return 0;
}

/* Re-encodes the booking with its times normalised to UTC, as the
 * runtime presents them. */
static int normalise_booking(lua_State *L, int b, struct buf *out, int64_t *end_ms,
                             struct cs_err *err)
{
    static const char *const times[] = {"start", "end", "original_start", "updated_at", NULL};
    for (int i = 0; times[i]; i++) {
        int64_t ms;
        int r = get_time(L, b, "booking", times[i], &ms, err);
        if (r < 0)
            return -1;
        if (r == 1) {
            char ts[TIME_RFC3339_MAX];
            time_format_rfc3339(ms, ts);
            lua_pushstring(L, ts);
            lua_setfield(L, b, times[i]);
            if (strcmp(times[i], "end") == 0)
                *end_ms = ms;
        }
    }
    return json_encode_value(L, b, out, err);
}

/* What the runtime can produce, so a dry run never decides a change the
 * service would never hand to a policy: a known kind, change.new as the
 * kind has it, a known source. */
static int check_change_shape(lua_State *L, int c, const struct dry_run *d,
                              struct cs_err *err)
{
    static const char *const sources[] = {"push", "poll", "full_sync", NULL};
    if (!d->kind || (strcmp(d->kind, "delete") != 0 && strcmp(d->kind, "time_change") != 0 &&
                     strcmp(d->kind, "title_change") != 0 && strcmp(d->kind, "response") != 0))
        return cs_err_set(err, "change.kind must be \"delete\", \"time_change\", "
                          "\"title_change\" or \"response\", got %s%.32s%s",
                          d->kind ? "\"" : "",
                          d->kind ? d->kind : "nothing", d->kind ? "\"" : "");
    int known = !d->source;
    for (int i = 0; !known && sources[i]; i++)
        known = strcmp(d->source, sources[i]) == 0;
    if (!known)
        return cs_err_set(err, "change.source must be \"push\", \"poll\" or "
                          "\"full_sync\", got \"%.32s\"", d->source);
    lua_getfield(L, c, "new");
    int has_new = lua_type(L, -1) == LUA_TTABLE;
    int nt = has_new ? (lua_getfield(L, -1, "start"), lua_type(L, -1)) : LUA_TNIL;
    int ne = has_new ? (lua_getfield(L, -2, "end"), lua_type(L, -1)) : LUA_TNIL;
    lua_settop(L, c);
    if (strcmp(d->kind, "delete") == 0 && has_new)
        return cs_err_set(err, "change.new must be absent on a delete");
    if (strcmp(d->kind, "delete") != 0 && (nt != LUA_TSTRING || ne != LUA_TSTRING))
        return cs_err_set(err, "change.new.start and change.new.end are required on a %s",
                          d->kind);
    return 0;
}

static int parse_change_file(lua_State *L, const char *text, size_t len,
                             struct dry_run *d, struct cs_err *err)
{
    static const char *const top_keys[] = {"change", "booking", "now", "settings",
                                           "calendar_id", NULL};
    static const char *const change_keys[] = {"kind", "event", "old", "new", "instance",
                                              "past", "source", NULL};
    struct policy_input *in = &d->in;
    int base = lua_gettop(L);
    int rc = -1, r;
    int64_t booking_end = POLICY_TIME_NONE, now_s;
    if (json_decode_object(L, text, len, err))
        return -1;
    int top = lua_gettop(L);
    if (json_only_keys(L, top, top_keys, err))
        goto done;
    in->now_ms = time_now_ms();
    lua_getfield(L, top, "now");
    int now_type = lua_type(L, -1);
    lua_pop(L, 1);
    if (now_type == LUA_TSTRING) {
        if (get_time(L, top, "top level", "now", &in->now_ms, err) < 0)
            goto done;
    } else if (now_type != LUA_TNIL) {
        if ((r = json_get_int(L, top, "now", &now_s, err)) < 0 ||
            now_s > INT64_C(253402300799) || now_s < INT64_C(-62135596800)) {
            cs_err_set(err, "now must be epoch seconds (an integer) or an RFC 3339 time");
            goto done;
        }
        in->now_ms = now_s * 1000;
    }
    if (json_get_int(L, top, "calendar_id", &in->calendar_id, err) < 0)
        goto done;
    if ((r = json_get_obj(L, top, "settings", err)) < 0)
        goto done;
    if (r == 1) {
        if (json_encode_value(L, -1, &d->settings, err))
            goto done;
        lua_pop(L, 1);
        in->settings_json = d->settings.data;
    }

    if ((r = json_get_obj(L, top, "booking", err)) < 0)
        goto done;
    in->no_old = 1;
    if (r == 1) {
        int b = lua_gettop(L);
        static const char *const required[] = {"uid", "start", "end", NULL};
        for (int i = 0; required[i]; i++) {
            lua_getfield(L, b, required[i]);
            int t = lua_type(L, -1);
            lua_pop(L, 1);
            if (t != LUA_TSTRING) {
                cs_err_set(err, "booking.%s is required (a string)", required[i]);
                goto done;
            }
        }
        if (!in->calendar_id && json_get_int(L, b, "calendar_id", &in->calendar_id, err) < 0)
            goto done;
        int64_t s = POLICY_TIME_NONE;
        if (get_time(L, b, "booking", "start", &s, err) < 0)
            goto done;
        if (normalise_booking(L, b, &d->booking, &booking_end, err))
            goto done;
        in->booking_json = d->booking.data;
        in->booking_len = d->booking.len;
        /* change.old defaults to the booking's span, as live */
        in->no_old = 0;
        in->old_start_ms = s;
        in->old_end_ms = booking_end;
        if (get_dup(L, b, "booking", "title", &d->old_title, err) ||
            get_dup(L, b, "booking", "uid", &d->uid, err))
            goto done;
        in->booking_uid = d->uid;
        lua_pop(L, 1);
    }

    if ((r = json_get_obj(L, top, "change", err)) < 0)
        goto done;
    if (r == 0) {
        cs_err_set(err, "change is required: {\"kind\": \"delete\"|\"time_change\"|"
                   "\"title_change\", ...}");
        goto done;
    }
    if (r == 1) {
        int c = lua_gettop(L);
        if (json_only_keys(L, c, change_keys, err) ||
            get_dup(L, c, "change", "kind", &d->kind, err) ||
            get_dup(L, c, "change", "source", &d->source, err))
            goto done;
        if (check_change_shape(L, c, d, err))
            goto done;
        if ((r = json_get_obj(L, c, "event", err)) < 0)
            goto done;
        if (r == 1) {
            if (json_encode_value(L, -1, &d->event, err))
                goto done;
            lua_pop(L, 1);
            in->event_json = d->event.data;
            in->event_len = d->event.len;
        }
        if ((r = json_get_obj(L, c, "old", err)) < 0)
            goto done;
        if (r == 1) {
            free(d->old_title);
            d->old_title = NULL;
            in->no_old = 0;
            if (get_span(L, "change.old", &in->old_start_ms, &in->old_end_ms,
                         &d->old_title, err))
                goto done;
            lua_pop(L, 1);
        }
        if ((r = json_get_obj(L, c, "new", err)) < 0)
            goto done;
        if (r == 1) {
            in->has_new = 1;
            if (get_span(L, "change.new", &in->new_start_ms, &in->new_end_ms,
                         &d->new_title, err))
                goto done;
            /* change.new.attendees: handed over as given (an array) */
            int nw = lua_gettop(L);
            lua_getfield(L, nw, "attendees");
            if (lua_type(L, -1) == LUA_TTABLE) {
                if (json_encode_value(L, -1, &d->attendees, err))
                    goto done;
                in->new_attendees = d->attendees.data;
            } else if (!lua_isnil(L, -1)) {
                cs_err_set(err, "change.new.attendees must be an array");
                goto done;
            }
            lua_settop(L, nw - 1);
        }
        if ((r = json_get_obj(L, c, "instance", err)) < 0)
            goto done;
        if (r == 1) {
            int i = lua_gettop(L);
            in->is_instance = 1;
            in->original_start_ms = POLICY_TIME_NONE;
            if (get_dup(L, i, "change.instance", "series_id", &d->series_id, err) ||
                get_time(L, i, "change.instance", "original_start",
                         &in->original_start_ms, err) < 0)
                goto done;
            lua_pop(L, 1);
        }
        if ((r = json_get_bool(L, c, "past", &in->past, err)) < 0)
            goto done;
        if (r == 0) {
            /* as live: the booking's end, or a time change's new end, is
             * at or before now */
            int64_t e = booking_end;
            if (d->kind && strcmp(d->kind, "time_change") == 0 && in->has_new &&
                in->new_end_ms != POLICY_TIME_NONE)
                e = in->new_end_ms;
            in->past = e != POLICY_TIME_NONE && e <= in->now_ms;
        }
        lua_pop(L, 1);
    }
    in->kind = d->kind;
    in->source = d->source;
    in->old_title = d->old_title;
    in->new_title = d->new_title;
    in->series_id = d->series_id;
    if (!d->old_title && in->no_old == 0 && in->old_start_ms == POLICY_TIME_NONE &&
        in->old_end_ms == POLICY_TIME_NONE)
        in->no_old = 1;
    rc = 0;
done:
    lua_settop(L, base);
    return rc;
}

int pol_load_candidate(const struct config *cfg, const char *policy, const char *cmd,
                       struct policy_version **out)
{
    struct cs_err err = {{0}};
    char path[4096], name[POLICY_NAME_MAX + 1], hash[13];
    char *src = NULL;
    size_t len = 0;
    struct policy_version *v = NULL;
    *out = NULL;
    size_t pl = strlen(policy);
    if (strchr(policy, '/') || (pl > 4 && strcmp(policy + pl - 4, ".lua") == 0)) {
        snprintf(path, sizeof path, "%s", policy);
    } else if (pol_valid_name(policy, pl)) {
        snprintf(path, sizeof path, "%s/%s.lua", cfg->policies, policy);
    } else {
        fprintf(stderr, "calsync: policy %s: '%s' is neither a file nor a policy "
                "name\n", cmd, policy);
        return 2;
    }
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t bl = strlen(base);
    snprintf(name, sizeof name, "%.*s", (int)(bl > 4 && strcmp(base + bl - 4, ".lua") == 0
                                               ? bl - 4 : bl), base);

    if (pol_file_read_policy(path, path, &src, &len, &err)) {
        fprintf(stderr, "calsync: policy %s: %s\n", cmd, err.msg);
        return 1;
    }
    if (policy_version_of(src, len, hash) ||
        !(v = pol_version_new(name, path, src, len, hash))) {
        fprintf(stderr, "calsync: policy %s: out of memory\n", cmd);
        free(src);
        return 1;
    }
    struct sandbox_msg msg = {{0}, {0}};
    if (pol_compile_check(cfg, name, path, v->src, v->len, &msg)) {
        fprintf(stderr, "%s\n", msg.text);
        pol_version_unref(v);
        return 1;
    }
    *out = v;
    return 0;
}

struct pol_change *pol_change_parse(lua_State *L, const char *text, size_t len,
                                    struct cs_err *err)
{
    struct dry_run *d = calloc(1, sizeof *d);
    if (!d) {
        cs_err_set(err, "out of memory");
        return NULL;
    }
    buf_init(&d->event);
    buf_init(&d->booking);
    buf_init(&d->settings);
    if (parse_change_file(L, text, len, d, err)) {
        dry_run_free(d);
        free(d);
        return NULL;
    }
    return (struct pol_change *)d;
}

const struct policy_input *pol_change_input(const struct pol_change *c)
{
    return &((const struct dry_run *)c)->in;
}

void pol_change_free(struct pol_change *c)
{
    if (!c)
        return;
    dry_run_free((struct dry_run *)c);
    free(c);
}

int policy_cmd_test(const struct config *cfg, const char *policy,
                    const char *change_file, const char *expect)
{
    struct cs_err err = {{0}};
    struct dry_run d;
    struct policy_version *v = NULL;
    struct sandbox *sb = NULL;
    struct policy_decision out;
    char *text = NULL;
    size_t tlen = 0;
    int rc = 1;
    memset(&d, 0, sizeof d);
    buf_init(&d.event);
    buf_init(&d.booking);
    buf_init(&d.settings);
    buf_init(&d.attendees);

    static const char *const actions[] = {"cancel", "reschedule", "update", "ignore",
                                          "flag", NULL};
    int known = !expect;
    for (int i = 0; !known && actions[i]; i++)
        known = strcmp(expect, actions[i]) == 0;
    if (!known) {
        fprintf(stderr, "calsync: policy test: --expect takes cancel, reschedule, update, "
                "ignore or flag, not '%s'\n", expect);
        rc = 2;
        goto done;
    }
    if ((rc = pol_load_candidate(cfg, policy, "test", &v)) != 0)
        goto done;
    rc = 1;

    if (pol_file_read(change_file, &text, &tlen, &err)) {
        fprintf(stderr, "calsync: policy test: %s\n", err.msg);
        goto done;
    }
    lua_State *J = json_state();
    if (!J) {
        fprintf(stderr, "calsync: policy test: out of memory\n");
        goto done;
    }
    if (parse_change_file(J, text, tlen, &d, &err)) {
        fprintf(stderr, "calsync: policy test: %s: %s\n", change_file, err.msg);
        goto done;
    }

    pol_decide_with(cfg, v, &sb, &d.in, &out);
    struct buf o;
    buf_init(&o);
    buf_puts(&o, "{\"action\":");
    buf_json_strz(&o, out.action);
    buf_puts(&o, ",\"reason\":");
    buf_json_strz(&o, out.reason);
    if (out.forced) {
        /* which failure (as calsync_policy_errors_total's kind) */
        buf_puts(&o, ",\"error\":");
        buf_json_strz(&o, out.error);
    }
    buf_puts(&o, "}\n");
    rc = fwrite(o.data, 1, o.len, stdout) == o.len && fflush(stdout) == 0 ? 0 : 1;
    buf_free(&o);
    if (out.forced) {
        /* live this is a flag for a human; in a test it is a failing policy */
        fprintf(stderr, "calsync: policy test: the runtime forced the decision: %s\n",
                out.reason);
        rc = 1;
    } else if (expect && strcmp(out.action, expect) != 0) {
        fprintf(stderr, "calsync: policy test: expected %s, got %s\n", expect, out.action);
        rc = 1;
    }
done:
    sandbox_free(sb);
    pol_version_unref(v);
    free(text);
    dry_run_free(&d);
    return rc;
}

