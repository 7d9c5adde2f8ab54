/* replay.c -- `calsync policy replay CANDIDATE [--since WHEN]
 * [--calendar ID] [--json]` (DESIGN §3).
 *
 * Every policy decision is recorded with its complete inputs
 * (store/decisions.h: a CHANGE.json document of `policy test`'s shape) at
 * the moment apply.c appends its audit entry. A replay reads them back,
 * parses each with the parser of `policy test` (pol_change_parse) and
 * decides it with the candidate through pol_decide_with, the path of live
 * decisions, in the real sandbox: ctx.now is the recorded one, so
 * os.time() and math.random agree with the live call (DESIGN §5). The
 * runtime's applicability check of apply.c is repeated (reschedule needs
 * the event's new times, update its title), so the live policy replayed
 * over its own decisions differs nowhere.
 *
 * It only reads: it opens the database as any reader (no claim on the
 * file), so it may run beside `serve`.
 */
#include "policy/internal.h"

#include "json.h"
#include "store/decisions.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct replay {
    const struct config *cfg;
    struct policy_version *cand;
    struct sandbox *sb;
    lua_State *J;
    int json;
    long replayed, differ, unreadable;
    struct buf out;   /* the JSON decisions, or the table rows */
};

/* WHEN: RFC 3339, or a duration before now: digits and one unit of d, h,
 * m, s ("7d", "12h"). 0 with *ms, or -1. */
static int parse_since(const char *s, int64_t *ms)
{
    size_t n = strlen(s);
    if (time_parse_rfc3339(s, n, ms) == 0)
        return 0;
    if (n < 2 || n > 12)
        return -1;
    int64_t v = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    int64_t unit;
    switch (s[n - 1]) {
    case 'd': unit = INT64_C(86400000); break;
    case 'h': unit = INT64_C(3600000); break;
    case 'm': unit = INT64_C(60000); break;
    case 's': unit = INT64_C(1000); break;
    default: return -1;
    }
    if (v > INT64_C(100000) * 86400000 / unit) /* beyond ~270 years: nonsense */
        return -1;
    *ms = time_now_ms() - v * unit;
    return 0;
}

static const char *or_dash(const char *s)
{
    return s && *s ? s : "-";
}

static int replay_one(void *ud, const struct decision_row *row)
{
    struct replay *rp = ud;
    struct cs_err err = {{0}};
    struct pol_change *ch = pol_change_parse(rp->J, row->inputs, strlen(row->inputs), &err);
    if (!ch) {
        /* a record this binary cannot read (a newer kind of change): said,
         * counted, and the replay goes on */
        fprintf(stderr, "calsync: policy replay: decision %lld: recorded inputs "
                "unreadable: %s\n", (long long)row->audit_id, err.msg);
        rp->unreadable++;
        return 0;
    }
    struct policy_decision d;
    pol_decide_with(rp->cfg, rp->cand, &rp->sb, pol_change_input(ch), &d);
    pol_change_free(ch);
    const char *why = NULL;
    if (strcmp(d.action, "reschedule") == 0 && !row->can_reschedule)
        why = "reschedule needs the event's new times";
    else if (strcmp(d.action, "update") == 0 && !row->can_update)
        why = "update needs the event's new title";
    if (why) {
        snprintf(d.reason, sizeof d.reason, "invalid decision: %s", why);
        snprintf(d.action, sizeof d.action, "flag");
    }
    rp->replayed++;
    if (strcmp(d.action, or_dash(row->action)) == 0)
        return 0;
    rp->differ++;
    char at[TIME_RFC3339_MAX];
    time_format_rfc3339(row->at_ms, at);
    struct buf *o = &rp->out;
    int rc;
    if (rp->json) {
        rc = buf_printf(o, "%s{\"decision_id\":%lld,\"at\":\"%s\",\"booking\":",
                        rp->differ > 1 ? "," : "", (long long)row->audit_id, at) |
             buf_json_strz(o, row->booking_uid) |
             buf_printf(o, ",\"calendar_id\":%lld,\"change\":", (long long)row->calendar_id) |
             buf_json_strz(o, row->change) | buf_puts(o, ",\"live\":{\"action\":") |
             buf_json_strz(o, row->action) | buf_puts(o, ",\"policy\":") |
             buf_json_strz(o, row->policy) | buf_puts(o, ",\"policy_version\":") |
             buf_json_strz(o, row->policy_version) |
             buf_puts(o, "},\"candidate\":{\"action\":") | buf_json_strz(o, d.action) |
             buf_puts(o, ",\"reason\":") | buf_json_strz(o, d.reason) | buf_puts(o, "}}");
    } else {
        char live[128];
        snprintf(live, sizeof live, "%s (%s %s)", or_dash(row->action),
                 or_dash(row->policy), or_dash(row->policy_version));
        rc = buf_printf(o, "%-8lld %-20s %-16.40s %-6lld %-12s %-32s %-10s %s\n",
                        (long long)row->audit_id, at, or_dash(row->booking_uid),
                        (long long)row->calendar_id, or_dash(row->change), live, d.action,
                        d.reason);
    }
    return rc ? -1 : 0;
}

int policy_cmd_replay(const struct config *cfg, const char *candidate, const char *since,
                      const char *calendar, int json)
{
    struct cs_err err = {{0}};
    struct replay rp;
    int rc = 1;
    int64_t since_ms = INT64_MIN, cal = 0;
    memset(&rp, 0, sizeof rp);
    rp.cfg = cfg;
    rp.json = json;
    buf_init(&rp.out);

    if (since && parse_since(since, &since_ms)) {
        fprintf(stderr, "calsync: policy replay: --since takes an RFC 3339 time or a "
                "duration such as 7d, 12h, 30m, not '%s'\n", since);
        rc = 2;
        goto done;
    }
    if (calendar) {
        char *end = NULL;
        errno = 0;
        long long v = strtoll(calendar, &end, 10);
        if (errno || !end || *end || end == calendar || v <= 0) {
            fprintf(stderr, "calsync: policy replay: --calendar takes a calendar id, "
                    "not '%s'\n", calendar);
            rc = 2;
            goto done;
        }
        cal = v;
    }
    if ((rc = pol_load_candidate(cfg, candidate, "replay", &rp.cand)) != 0)
        goto done;
    rc = 1;
    /* a reader never creates the database it was asked to read */
    if (strncmp(cfg->database, "postgresql://", 13) != 0 &&
        access(cfg->database, R_OK) != 0) {
        fprintf(stderr, "calsync: policy replay: cannot read database %s: %s\n",
                cfg->database, strerror(errno));
        goto done;
    }
    struct store_conn *c;
    if (store_init(cfg->database, &err) || !(c = store_conn(&err))) {
        fprintf(stderr, "calsync: policy replay: %s\n", err.msg);
        goto done;
    }
    if (!(rp.J = json_state())) {
        fprintf(stderr, "calsync: policy replay: out of memory\n");
        goto done;
    }
    pol_decide_quiet(1); /* a candidate's errors are its decisions here */
    if (decision_each(c, since_ms, cal, replay_one, &rp, &err)) {
        fprintf(stderr, "calsync: policy replay: %s\n", err.msg[0] ? err.msg
                                                                   : "out of memory");
        goto done;
    }
    struct buf o;
    buf_init(&o);
    if (json) {
        buf_printf(&o, "{\"replayed\":%ld,\"differ\":%ld,\"decisions\":[", rp.replayed,
                   rp.differ);
        buf_append(&o, rp.out.data ? rp.out.data : "", rp.out.len);
        buf_puts(&o, "]}\n");
    } else {
        buf_printf(&o, "replayed %ld decision(s) under %s %s: %ld differ\n", rp.replayed,
                   rp.cand->name, rp.cand->version, rp.differ);
        if (rp.differ) {
            buf_printf(&o, "%-8s %-20s %-16s %-6s %-12s %-32s %-10s %s\n", "ID", "AT",
                       "BOOKING", "CAL", "CHANGE", "LIVE (POLICY VERSION)", "CANDIDATE",
                       "REASON");
            buf_append(&o, rp.out.data, rp.out.len);
        }
    }
    if (rp.unreadable)
        fprintf(stderr, "calsync: policy replay: %ld recorded decision(s) could not be "
                "read (above)\n", rp.unreadable);
    rc = o.data && fwrite(o.data, 1, o.len, stdout) == o.len && fflush(stdout) == 0 ? 0 : 1;
    buf_free(&o);
done:
    pol_decide_quiet(0);
    sandbox_free(rp.sb);
    pol_version_unref(rp.cand);
    buf_free(&rp.out);
    store_shutdown();
    return rc;
}
