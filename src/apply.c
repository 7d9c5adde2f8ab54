/* apply.c -- matching, classification, policy and application of one
 * changed event. See apply.h.
 *
 * Matching (DESIGN §2 step 4), a booking follows an event when
 *   - its event reference is the event id (a whole event), or
 *   - it follows an occurrence: reference = (series id, original start) and
 *     the event is that occurrence (recurringEventId + originalStartTime,
 *     or both parsed from a stub's instance id), or
 *   - the event carries calsync_booking_uid = its uid (events calsync wrote),
 *   - and a cancelled series master (a bare stub with the series id)
 *     cascades to every occurrence booking of that series.
 *
 * Idempotence: a change is applied to a booking only when the booking does
 * not already reflect it (echo of calsync's own write, same etag, or the
 * same values), and every audit entry carries a dedupe key
 * (calendar, event, etag, booking) that the audit table keeps unique.
 *
 * Decide, then apply (DESIGN §2 "Policies off the write path"): sync.c
 * calls each hook twice per unit. The decide pass (reading only, under a
 * read snapshot) does everything up to the policy call and gathers the
 * exact bytes of everything the decision is made from (struct request);
 * apply_decide() then runs the policy on each, with no transaction open,
 * and keeps the decisions in this thread's table (struct decisions). The
 * apply pass (inside the unit's transaction) re-reads the booking, the
 * calendar and the mirror row, rebuilds the same bytes, and looks them
 * up: a hit is applied; a miss means something changed since the decision
 * (or it was never made) and the hook answers SYNC_HOOK_STALE without
 * writing or running anything more.
 */
#include "apply.h"
#include "fault.h"

#include "calendar.h"

#include "log.h"
#include "metrics.h"
#include "outbox.h"
#include "policy/policy.h"
#include "provider/provider.h"
#include "store/decisions.h"

#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define APPLY_MAX_MATCH 256

/* ------------------------------------------------ decisions made ahead
 * One table per worker thread, emptied when sync.c starts a new decide
 * window (info->window). The decide pass only gathers requests (under a
 * read transaction that sync.c opens for its reads); apply_decide() then
 * runs the policy for each, with no transaction open. Keys are the exact
 * encoded inputs (struct request, request_codec), not a digest: a decision
 * is applied only to the very inputs it was made from, never to a
 * collision; and the policy is called with the inputs decoded from the key
 * itself, so what was decided and what it is kept under cannot differ. A
 * window holds at most SYNC_DECIDE_WINDOW units, so the table stays
 * bounded: about a thousand entries of twice the event's JSON (the key,
 * and once decided the inputs document kept for the record) plus a
 * decision (~4 KiB each), freed when the next window starts. */

/* Everything one decision is made from, but the clock: the policy and the
 * calendar's settings, the change as the policy sees it, the whole booking
 * row (what apply_one writes from), and what check_applicable needs to
 * know of the event. ctx.now and `past` are left out on purpose: a
 * decision stands as made at its decide pass's instant, a moment before
 * its transaction, as it would have stood had that transaction begun
 * then. */
struct request {
    const char *policy;
    const char *settings;
    const char *shadow;   /* the calendar's shadow policy, or NULL */
    int can_reschedule;   /* the event has new times (not a deletion) */
    int can_update;       /* the event has a title (not a deletion) */
    struct policy_input in;
    struct booking b;     /* in.booking points here once decoded */
};

/* Encodes into `out`, or decodes from [p, end): every field in one order,
 * strings length-prefixed (-1: NULL) and NUL-terminated, so a decoded
 * string points into the key itself. */
struct codec {
    struct buf *out;
    const char *p, *end;
    int bad;              /* out of memory, or a key cut short */
};

static void c_str(struct codec *c, const char **s, size_t *len)
{
    int64_t n;
    if (c->out) {
        n = *s ? (int64_t)(len ? *len : strlen(*s)) : -1;
        if (buf_append(c->out, &n, sizeof n) ||
            (*s && (buf_append(c->out, *s, (size_t)n) || buf_append(c->out, "", 1))))
            c->bad = 1;
        return;
    }
    if (c->bad || c->end - c->p < (ptrdiff_t)sizeof n) {
        c->bad = 1;
        return;
    }
    memcpy(&n, c->p, sizeof n);
    c->p += sizeof n;
    *s = NULL;
    if (len)
        *len = 0;
    if (n < 0)
        return;
    if (c->end - c->p < n + 1) {
        c->bad = 1;
        return;
    }
    *s = c->p;
    if (len)
        *len = (size_t)n;
    c->p += n + 1;
}

/* A booking's owned string field: decoded, it points into the key too. */
static void c_own(struct codec *c, char **field)
{
    const char *v = *field;
    c_str(c, &v, NULL);
    *field = (char *)v;
}

/* A char array field (status, write state). */
static void c_arr(struct codec *c, char *arr, size_t cap)
{
    const char *v = arr;
    c_str(c, &v, NULL);
    if (!c->out && !c->bad)
        snprintf(arr, cap, "%s", v ? v : "");
}

static void c_i64(struct codec *c, int64_t *v)
{
    if (c->out) {
        if (buf_append(c->out, v, sizeof *v))
            c->bad = 1;
    } else if (c->bad || c->end - c->p < (ptrdiff_t)sizeof *v) {
        c->bad = 1;
    } else {
        memcpy(v, c->p, sizeof *v);
        c->p += sizeof *v;
    }
}

static void c_int(struct codec *c, int *v)
{
    int64_t x = *v;
    c_i64(c, &x);
    *v = (int)x;
}

static void request_codec(struct codec *c, struct request *r)
{
    struct policy_input *in = &r->in;
    struct booking *b = &r->b;
    c_str(c, &r->policy, NULL);
    c_str(c, &r->settings, NULL);
    c_str(c, &r->shadow, NULL);
    c_int(c, &r->can_reschedule);
    c_int(c, &r->can_update);
    c_str(c, &in->kind, NULL);
    c_str(c, &in->event_json, &in->event_len);
    c_i64(c, &in->old_start_ms);
    c_i64(c, &in->old_end_ms);
    c_str(c, &in->old_title, NULL);
    c_int(c, &in->has_new);
    c_i64(c, &in->new_start_ms);
    c_i64(c, &in->new_end_ms);
    c_str(c, &in->new_title, NULL);
    c_str(c, &in->new_attendees, NULL);
    c_int(c, &in->is_instance);
    c_str(c, &in->series_id, NULL);
    c_i64(c, &in->original_start_ms);
    c_str(c, &in->source, NULL);
    c_i64(c, &in->calendar_id);
    c_own(c, &b->uid);
    c_i64(c, &b->calendar_id);
    c_own(c, &b->title);
    c_i64(c, &b->start_ms);
    c_i64(c, &b->end_ms);
    c_arr(c, b->status, sizeof b->status);
    c_int(c, &b->needs_review);
    c_own(c, &b->event_id);
    c_int(c, &b->has_original);
    c_i64(c, &b->original_start_ms);
    c_own(c, &b->cancelled_by);
    c_own(c, &b->cancel_reason);
    c_own(c, &b->etag);
    c_arr(c, b->write_state, sizeof b->write_state);
    c_own(c, &b->write_error);
    c_i64(c, &b->updated_ms);
}

/* The key of r, into k. 0 or -1 (memory). */
static int request_key(struct buf *k, struct request *r)
{
    struct codec c = {k, NULL, NULL, 0};
    buf_reset(k);
    request_codec(&c, r);
    return c.bad ? -1 : 0;
}

/* r from key [k, k + n): strings point into the key. 0 or -1. */
static int request_decode(const char *k, size_t n, struct request *r)
{
    struct codec c = {NULL, k, k + n, 0};
    memset(r, 0, sizeof *r);
    request_codec(&c, r);
    r->in.booking = &r->b;
    r->in.settings_json = r->settings;
    return c.bad || c.p != c.end ? -1 : 0;
}

/* One kept request, allocated with its key (freed when the window ends:
 * the slot table itself holds pointers only, so an idle worker keeps a
 * few KiB, not a window's worth of decisions). */
struct decided {
    uint64_t hash;
    size_t key_len;
    unsigned order;     /* gathering order (policies run in unit order) */
    int pending;        /* gathered, not decided yet */
    struct policy_decision d;
    int has_shadow;     /* the request named a shadow policy: */
    struct policy_decision shadow; /* its decision, never applied */
    char *inputs;       /* owned: the inputs as the policy got them, as a
                         * CHANGE.json document (policy_input_json), built
                         * once when decided and recorded by the apply
                         * pass (replay); NULL while pending */
    char key[];
};

struct decisions {
    unsigned window;
    struct decided **v; /* owned, open addressing, cap a power of two */
    size_t n, cap;
    size_t n_pending;
};

static void decisions_clear(struct decisions *t)
{
    for (size_t i = 0; i < t->cap; i++) {
        if (t->v[i])
            free(t->v[i]->inputs);
        free(t->v[i]);
        t->v[i] = NULL;
    }
    t->n = t->n_pending = 0;
}

/* Keys are a few hundred bytes to a few KiB (the event's JSON): hashed
 * 8 bytes at a time (a multiply-xorshift mix), not byte by byte. Only a
 * bucket index: equality is always checked on the whole key. */
static uint64_t key_hash(const char *k, size_t n)
{
    const uint64_t m = 0x9E3779B97F4A7C15ULL;
    uint64_t h = 0x243F6A8885A308D3ULL ^ (n * m), w;
    for (; n >= 8; k += 8, n -= 8) {
        memcpy(&w, k, 8);
        h = (h ^ w) * m;
        h ^= h >> 29;
    }
    w = 0;
    memcpy(&w, k, n);
    h = (h ^ w) * m;
    return h ^ (h >> 32);
}

/* The slot of key k: the entry holding it, or the empty slot for it. */
static struct decided **decisions_slot(const struct decisions *t, const char *k,
                                       size_t n, uint64_t h)
{
    size_t mask = t->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        struct decided *e = t->v[i];
        if (!e || (e->hash == h && e->key_len == n && memcmp(e->key, k, n) == 0))
            return &t->v[i];
    }
}

/* The entry under key k, decided or pending, or NULL. */
static struct decided *decisions_find(const struct decisions *t, const struct buf *k)
{
    if (t->n == 0)
        return NULL;
    return *decisions_slot(t, k->data, k->len, key_hash(k->data, k->len));
}

/* Adds key k (copied) as a pending request, once. 0, or -1 when out of
 * memory. */
static int decisions_gather(struct decisions *t, const struct buf *k)
{
    if ((t->n + 1) * 2 > t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        struct decided **v = calloc(cap, sizeof *v);
        if (!v)
            return -1;
        struct decisions grown = {t->window, v, 0, cap, 0};
        for (size_t i = 0; i < t->cap; i++)
            if (t->v[i])
                *decisions_slot(&grown, t->v[i]->key, t->v[i]->key_len, t->v[i]->hash) =
                    t->v[i];
        free(t->v);
        t->v = v;
        t->cap = cap;
    }
    uint64_t h = key_hash(k->data, k->len);
    struct decided **slot = decisions_slot(t, k->data, k->len, h);
    if (*slot)
        return 0;
    struct decided *e = malloc(sizeof *e + (k->len ? k->len : 1));
    if (!e)
        return -1;
    memcpy(e->key, k->data, k->len);
    e->key_len = k->len;
    e->hash = h;
    e->order = (unsigned)t->n;
    e->pending = 1;
    e->inputs = NULL;
    *slot = e;
    t->n++;
    t->n_pending++;
    return 0;
}

static int by_order(const void *a, const void *b)
{
    const struct decided *x = *(struct decided *const *)a, *y = *(struct decided *const *)b;
    return (x->order > y->order) - (x->order < y->order);
}

/* ------------------------------------------------------- thread state */

static const struct config *apply_cfg;
static pthread_key_t thread_key;
static pthread_once_t thread_once = PTHREAD_ONCE_INIT;

/* What one worker thread keeps between calls: its policy runner, the
 * decisions of the current window, and a scratch key. */
struct apply_thread {
    struct policy_runner *runner;
    struct decisions dec;
    struct buf key;
};

static void thread_free(void *p)
{
    struct apply_thread *t = p;
    if (!t)
        return;
    policy_runner_free(t->runner);
    decisions_clear(&t->dec);
    free(t->dec.v);
    buf_free(&t->key);
    free(t);
}

static void thread_key_init(void)
{
    pthread_key_create(&thread_key, thread_free);
}

void apply_init(const struct config *cfg)
{
    apply_cfg = cfg;
}

void apply_thread_done(void)
{
    pthread_once(&thread_once, thread_key_init);
    struct apply_thread *t = pthread_getspecific(thread_key);
    if (t) {
        pthread_setspecific(thread_key, NULL);
        thread_free(t);
    }
}

/* The calling thread's state, created on first use (NULL: out of memory);
 * its decisions are emptied when `window` is not theirs. */
static struct apply_thread *thread_state(unsigned window)
{
    pthread_once(&thread_once, thread_key_init);
    struct apply_thread *t = pthread_getspecific(thread_key);
    if (!t) {
        if (!(t = calloc(1, sizeof *t)))
            return NULL;
        buf_init(&t->key);
        t->dec.window = window;
        pthread_setspecific(thread_key, t);
    }
    if (t->dec.window != window) {
        decisions_clear(&t->dec);
        t->dec.window = window;
    }
    return t;
}

static struct policy_runner *runner(struct apply_thread *t)
{
    if (!t->runner)
        t->runner = policy_runner_new(apply_cfg);
    return t->runner;
}

/* ----------------------------------------------------------- classify */

static int is_cancelled(const struct sync_event *e)
{
    return e->status && strcmp(e->status, "cancelled") == 0;
}

static int str_differs(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "") != 0;
}

enum apply_kind apply_classify(const struct sync_event *base,
                               const struct booking *b,
                               const struct sync_event *now)
{
    if (is_cancelled(now))
        return base && is_cancelled(base) ? APPLY_NONE : APPLY_DELETE;
    int64_t bs = base ? base->start_ms : b->start_ms;
    int64_t be = base ? base->end_ms : b->end_ms;
    const char *bt = base ? base->title : b->title;
    if (base && is_cancelled(base)) {
        /* a cancelled event that comes back: judge against the booking */
        bs = b->start_ms;
        be = b->end_ms;
        bt = b->title;
    }
    if (now->start_ms != SYNC_NO_TIME && now->end_ms != SYNC_NO_TIME &&
        (now->start_ms != bs || now->end_ms != be))
        return APPLY_TIME;
    if (now->title && str_differs(now->title, bt))
        return APPLY_TITLE;
    /* last (DESIGN §5): an attendee's response, against what calsync last
     * saw of the event. Only between two known lists: an event seen for
     * the first time (or mirrored before attendees were kept) has no
     * earlier responses to compare with, and attendees all removed are
     * nobody's response */
    if (base && !is_cancelled(base) && base->attendees && now->attendees &&
        str_differs(now->attendees, base->attendees))
        return APPLY_RESPONSE;
    return APPLY_NONE;
}

static const char *kind_name(enum apply_kind k)
{
    switch (k) {
    case APPLY_DELETE: return "delete";
    case APPLY_TIME: return "time_change";
    case APPLY_TITLE: return "title_change";
    case APPLY_RESPONSE: return "response";
    default: return "none";
    }
}

/* ------------------------------------------------------------- matching */

struct matches {
    char *uid[APPLY_MAX_MATCH];
    int n;
};

static void add_match(struct matches *m, const char *uid)
{
    if (!uid || m->n == APPLY_MAX_MATCH)
        return;
    for (int i = 0; i < m->n; i++)
        if (strcmp(m->uid[i], uid) == 0)
            return;
    char *d = strdup(uid);
    if (d)
        m->uid[m->n++] = d;
}

static void matches_free(struct matches *m)
{
    for (int i = 0; i < m->n; i++)
        free(m->uid[i]);
    m->n = 0;
}

static void collect(void *ud, const char *uid)
{
    add_match(ud, uid);
}

static int find_bookings(struct store_conn *c, int64_t cal,
                         const struct sync_event *now, struct matches *m,
                         struct cs_err *err)
{
    if (booking_refs_at(c, cal, now->id, -1, collect, m, err))
        return -1;
    if (now->series_id && now->original_start_ms != SYNC_NO_TIME &&
        booking_refs_at(c, cal, now->series_id, now->original_start_ms, collect, m, err))
        return -1;
    /* a cancelled master: every occurrence booking of the series */
    if (is_cancelled(now) && !now->series_id &&
        booking_refs_of_series(c, cal, now->id, collect, m, err))
        return -1;
    if (now->booking_tag && booking_on_calendar(c, now->booking_tag, cal, collect, m, err))
        return -1;
    return 0;
}

/* ---------------------------------------------------------------- apply */

static const char *trigger_for(const char *action)
{
    if (strcmp(action, "cancel") == 0) return "BOOKING_CANCELLED";
    if (strcmp(action, "reschedule") == 0) return "BOOKING_RESCHEDULED";
    if (strcmp(action, "update") == 0) return "BOOKING_UPDATED";
    if (strcmp(action, "flag") == 0) return "BOOKING_FLAGGED";
    return NULL;
}

/* Turns an action the change cannot support into flag. */
static void check_applicable(struct policy_decision *d, const struct request *r)
{
    const char *why = NULL;
    if (strcmp(d->action, "reschedule") == 0 && !r->can_reschedule)
        why = "reschedule needs the event's new times";
    else if (strcmp(d->action, "update") == 0 && !r->can_update)
        why = "update needs the event's new title";
    if (why) {
        snprintf(d->reason, sizeof d->reason, "invalid decision: %s", why);
        snprintf(d->action, sizeof d->action, "flag");
        d->forced = 1;
        metrics_inc("calsync_policy_errors_total{kind=\"decision\"}");
    }
}

/* The booking `b` as it will read once apply_relink's move_ref has moved
 * it from occurrence `old` to occurrence `now` (its own reference follows
 * only when it was that occurrence), so that the decide pass builds the
 * inputs the apply pass will read. */
static int simulate_move(struct booking *b, const struct sync_event *old,
                         const struct sync_event *now)
{
    if (!b->event_id || strcmp(b->event_id, old->series_id) != 0 ||
        !b->has_original || b->original_start_ms != old->original_start_ms)
        return 0;
    char *id = strdup(now->series_id);
    if (!id)
        return -1;
    free(b->event_id);
    b->event_id = id;
    b->original_start_ms = now->original_start_ms;
    return 0;
}

/* One booking's share of a change, in the pass info->pass names.
 * Decide pass: everything up to the policy call, and the request (its
 * inputs, once per distinct input) gathered in t for apply_decide();
 * nothing written. Apply pass:
 * the same steps from fresh reads, then the decision kept for exactly
 * these inputs is applied with its audit entry and webhook; none kept ->
 * SYNC_HOOK_STALE, nothing written. `relinked`: the booking is being
 * moved from `old` to `now` by apply_relink (the decide pass sees it as
 * moved already). 0, SYNC_HOOK_STALE or -1. */
/* ------------------------------------------------ the decision record
 * DESIGN §2 "Replayable decisions": beside the audit entry, the complete
 * inputs of the decision as a `policy test` CHANGE.json document (so a
 * replay parses them the way a dry run does and decides through the same
 * path), the shadow's decision, and the sources of the versions that
 * decided. */

/* Keeps the source of the version that made d (a forced flag without a
 * version has none), unless the engine stored it when the version went
 * live: the common case, which so copies and writes nothing per
 * decision. 0 or -1. */
static int keep_source(struct store_conn *c, const struct policy_decision *d,
                       struct cs_err *err)
{
    char *src = NULL;
    size_t len = 0;
    if (!d->version[0] || policy_source_stored(d->policy, d->version))
        return 0;
    int r = policy_source_copy(d->policy, d->version, &src, &len);
    if (r < 0)
        return cs_err_set(err, "out of memory");
    if (r == 0) {
        /* only when the engine could not keep it (OOM at publish) */
        log_warn("apply.source_unknown", "policy=%s version=%s", log_q(d->policy),
                 d->version);
        return 0;
    }
    r = policy_source_keep(c, d->policy, d->version, src, len, err);
    free(src);
    return r;
}

/* The record of the decision `kept` made on r, whose audit entry is
 * audit_id; inside the apply transaction. The inputs are the text built
 * when the decision was made (apply_decide): the key matched, so they are
 * these inputs. 0 or -1. */
static int record_decision(struct store_conn *c, const struct request *r,
                           const struct decided *kept, int64_t audit_id, struct cs_err *err)
{
    struct buf sh;
    int rc = -1;
    buf_init(&sh);
    if (kept->has_shadow) {
        const struct policy_decision *s = &kept->shadow;
        if (buf_puts(&sh, "{\"policy\":") | buf_json_strz(&sh, s->policy) |
            buf_puts(&sh, ",\"policy_version\":") |
            buf_json_strz(&sh, s->version[0] ? s->version : NULL) |
            buf_puts(&sh, ",\"action\":") | buf_json_strz(&sh, s->action) |
            buf_puts(&sh, ",\"reason\":") | buf_json_strz(&sh, s->reason) |
            buf_puts(&sh, "}")) {
            cs_err_set(err, "out of memory");
            goto done;
        }
    }
    struct decision_record rec = {
        .audit_id = audit_id, .calendar_id = r->in.calendar_id, .inputs = kept->inputs,
        .can_reschedule = r->can_reschedule, .can_update = r->can_update,
        .shadow = kept->has_shadow ? sh.data : NULL,
    };
    if (decision_record_add(c, &rec, err) || keep_source(c, &kept->d, err) ||
        (kept->has_shadow && keep_source(c, &kept->shadow, err)))
        goto done;
    rc = 0;
done:
    buf_free(&sh);
    return rc;
}

static int apply_one(struct store_conn *c, struct apply_thread *t,
                     const struct sync_info *info,
                     const struct sync_event *old, const struct sync_event *now,
                     const char *raw, size_t raw_len, const char *uid,
                     const struct calendar_row *cal, const char *shadow, int relinked,
                     struct cs_err *err)
{
    struct booking b, before;
    int rc = booking_get(c, uid, &b, err);
    if (rc <= 0)
        return rc; /* gone: nothing to do */
    rc = -1;
    before = b;
    before.title = NULL;
    struct buf snap_before, snap_after;
    buf_init(&snap_before);
    buf_init(&snap_after);
    char *new_title = NULL;
    int deciding = info->pass == SYNC_PASS_DECIDE;

    if (deciding && relinked && simulate_move(&b, old, now)) {
        cs_err_set(err, "out of memory");
        goto done;
    }
    if (strcmp(b.status, "cancelled") == 0) {
        rc = 0; /* changes to cancelled bookings are dropped */
        goto done;
    }
    if (now->etag && b.etag && strcmp(now->etag, b.etag) == 0) {
        if (!deciding)
            metrics_inc("calsync_echoes_total");
        rc = 0; /* the echo of calsync's own write */
        goto done;
    }
    if (!old && strcmp(b.write_state, "pending") == 0 && !is_cancelled(now)) {
        /* First sight of an event the app is changing right now: the
         * booking shows the app's pending write, not what Google had, so
         * comparing with it would mistake the app's own change for the
         * host's. The event becomes the baseline (the mirror) and the
         * pending write goes on top of it. Not a deletion, though: no
         * write goes on top of a deleted event (Google would patch it and
         * leave it cancelled), so the policy decides it now. */
        rc = 0;
        goto done;
    }
    enum apply_kind kind = apply_classify(old, &b, now);
    /* the booking already reflects it: nothing to decide (re-reads, echoes
     * of writes whose etag was not recorded yet) */
    if ((kind == APPLY_TIME && now->start_ms == b.start_ms && now->end_ms == b.end_ms &&
         !str_differs(now->title, b.title)) ||
        (kind == APPLY_TITLE && !str_differs(now->title, b.title)))
        kind = APPLY_NONE;
    if (kind == APPLY_NONE) {
        rc = 0;
        goto done;
    }
    struct request r = {
        .policy = cal->policy,
        .settings = cal->settings,
        .shadow = shadow && *shadow ? shadow : NULL,
        .can_reschedule = kind != APPLY_DELETE && now->start_ms != SYNC_NO_TIME,
        .can_update = kind != APPLY_DELETE && now->title != NULL,
        .in = {
            .kind = kind_name(kind),
            .event_json = raw,
            .event_len = raw_len,
            .old_start_ms = b.start_ms,
            .old_end_ms = b.end_ms,
            .old_title = b.title,
            .has_new = kind != APPLY_DELETE,
            .new_start_ms = now->start_ms != SYNC_NO_TIME ? now->start_ms : b.start_ms,
            .new_end_ms = now->end_ms != SYNC_NO_TIME ? now->end_ms : b.end_ms,
            .new_title = now->title ? now->title : b.title,
            .new_attendees = kind != APPLY_DELETE ? now->attendees : NULL,
            .is_instance = now->series_id && now->original_start_ms != SYNC_NO_TIME,
            .series_id = now->series_id,
            .original_start_ms = now->original_start_ms,
            .source = sync_source_name(info->source),
            .calendar_id = info->calendar_id,
        },
        .b = b,
    };
    if (request_key(&t->key, &r)) {
        cs_err_set(err, "out of memory");
        goto done;
    }
    if (deciding) {
        /* gathered only (once per distinct input): apply_decide() runs the
         * policy once sync.c has ended the decide pass's read transaction */
        if (decisions_gather(&t->dec, &t->key)) {
            cs_err_set(err, "out of memory");
            goto done;
        }
        rc = 0;
        goto done;
    }
    struct decided *kept = decisions_find(&t->dec, &t->key);
    if (!kept || kept->pending) {
        /* decided from other inputs (the app changed the booking, an
         * earlier unit applied something to it, the calendar's policy or
         * settings changed) or never: never apply a stale decision */
        log_debug("apply.stale", "booking=%s event=%s", log_q(uid), log_q(now->id));
        rc = SYNC_HOOK_STALE;
        goto done;
    }
    struct policy_decision d = kept->d;
    int64_t now_ms = time_now_ms(); /* the booking's updated_at: when it is written */
    int64_t audit_id = 0;

    booking_snapshot_json(&b, &snap_before);
    if (!(before.title = strdup(b.title))) {
        cs_err_set(err, "out of memory");
        goto done;
    }
    if (strcmp(d.action, "cancel") == 0) {
        snprintf(b.status, sizeof b.status, "cancelled");
        free(b.cancelled_by);
        free(b.cancel_reason);
        /* where the change came from: the calendar's provider */
        {
            const struct provider_ops *pv = NULL;
            struct cs_err e2;
            b.cancelled_by = strdup(provider_for_credential(c, info->credential_id, &pv, &e2) == 0
                                        ? pv->name : "google");
        }
        b.cancel_reason = strdup(d.reason);
    } else if (strcmp(d.action, "reschedule") == 0) {
        b.start_ms = now->start_ms;
        b.end_ms = now->end_ms;
    } else if (strcmp(d.action, "update") == 0) {
        if (!(new_title = strdup(now->title))) {
            cs_err_set(err, "out of memory");
            goto done;
        }
        free(b.title);
        b.title = new_title;
    } else if (strcmp(d.action, "flag") == 0) {
        b.needs_review = 1;
        /* what the flag holds back, for the app to resolve (DESIGN §4
         * `proposed`): the event's state now, nothing for a deletion */
        snprintf(b.proposed_kind, sizeof b.proposed_kind, "%s", r.in.kind);
        b.proposed_start_ms = r.in.has_new ? r.in.new_start_ms : -1;
        b.proposed_end_ms = r.in.has_new ? r.in.new_end_ms : -1;
        free(b.proposed_title);
        b.proposed_title = NULL;
        if (r.in.has_new && r.in.new_title && !(b.proposed_title = strdup(r.in.new_title))) {
            cs_err_set(err, "out of memory");
            goto done;
        }
    }
    int changed = strcmp(d.action, "ignore") != 0;
    if (changed)
        b.updated_ms = now_ms;
    booking_snapshot_json(&b, &snap_after);
    /* the audit entry goes first: its dedupe key refuses a second decision
     * for the same event version, and then nothing else is written */
    char key[512];
    snprintf(key, sizeof key, "%lld|%s|%s|%s", (long long)info->calendar_id,
             now->id, now->etag ? now->etag : "-", uid);
    struct audit_entry e = {
        .booking_uid = uid, .source = r.in.source, .change = r.in.kind,
        .action = d.action, .reason = d.reason, .policy = d.policy,
        .policy_version = d.version[0] ? d.version : NULL,
        .before = snap_before.data, .after = snap_after.data, .dedupe_key = key,
        .calendar_id = info->calendar_id,
        .id_out = &audit_id,
    };
    int dup = audit_append(c, &e, err);
    if (dup != 0) {
        rc = dup < 0 ? -1 : 0;
        goto done;
    }
    if (record_decision(c, &r, kept, audit_id, err))
        goto done;
    fault_point("apply_after_audit");
    if (changed && booking_save(c, &b, err))
        goto done;
    fault_point("apply_after_booking_save");
    const char *trigger = trigger_for(d.action);
    if (trigger && outbox_enqueue_booking(c, trigger, &b, &before, d.reason,
                                          r.in.source, d.policy,
                                          d.version[0] ? d.version : NULL, err))
        goto done;
    fault_point("apply_after_outbox_enqueue");
    /* the sender is woken after the page's commit (sync.c), not here: a
     * kick inside the transaction finds the row not yet visible */
    log_info("apply.decision", "booking=%s change=%s action=%s policy=%s version=%s source=%s",
             log_q(uid), r.in.kind, d.action, log_q(d.policy), d.version, r.in.source);
    rc = 0;
done:
    free(before.title);
    buf_free(&snap_before);
    buf_free(&snap_after);
    booking_free(&b);
    return rc;
}

/* Decides or applies (info->pass) the change for every booking in m, with
 * the calendar's policy and settings loaded once. 0 (also for no
 * booking), SYNC_HOOK_STALE or -1. In the apply pass a stale booking
 * ends the unit at once: the caller rolls back what the others wrote. */
static int decide_all(struct store_conn *c, const struct sync_info *info,
                      const struct sync_event *old, const struct sync_event *now,
                      const char *raw_json, size_t raw_len, const struct matches *m,
                      int relinked, struct cs_err *err)
{
    struct calendar_row cal = {0};
    int rc = -1;
    if (m->n == 0)
        return 0;
    struct apply_thread *t = thread_state(info->window);
    if (!t)
        return cs_err_set(err, "out of memory");
    int found = calendar_load(c, info->calendar_id, &cal, err);
    if (found <= 0) {
        if (found == 0)
            cs_err_set(err, "calendar %lld: cannot load", (long long)info->calendar_id);
        goto done;
    }
    char shadow[CAL_POLICY_NAME_MAX + 1];
    if (calendar_shadow_policy(c, info->calendar_id, shadow, sizeof shadow, err) < 0)
        goto done;
    for (int i = 0; i < m->n; i++) {
        int r = apply_one(c, t, info, old, now, raw_json, raw_len, m->uid[i], &cal,
                          shadow, relinked, err);
        if (r) {
            rc = r;
            goto done;
        }
    }
    rc = 0;
done:
    calendar_row_free(&cal);
    return rc;
}

/* Moves booking `uid` from (cal, old series, old original start) to the
 * successor occurrence: its booking_refs row and, when the booking's own
 * reference is that occurrence, bookings.event_id/original_start_ms. */
static int move_ref(struct store_conn *c, int64_t cal, const struct sync_event *old,
                    const struct sync_event *now, const char *uid, struct cs_err *err)
{
    return booking_ref_move(c, cal, uid, old->series_id, old->original_start_ms,
                            now->series_id, now->original_start_ms, err);
}

int apply_relink(void *ud, struct store_conn *c, const struct sync_info *info,
                 const struct sync_event *old, const struct sync_event *now,
                 const char *raw_json, size_t raw_len, struct cs_err *err)
{
    (void)ud;
    struct matches m = {{0}, 0};
    int rc = -1;
    if (!old->series_id || old->original_start_ms == SYNC_NO_TIME ||
        !now->series_id || now->original_start_ms == SYNC_NO_TIME)
        return 0;
    if (booking_refs_at(c, info->calendar_id, old->series_id, old->original_start_ms,
                        collect, &m, err))
        goto done;
    if (m.n == 0) {
        rc = 0;
        goto done;
    }
    if (info->pass == SYNC_PASS_APPLY) {
        for (int i = 0; i < m.n; i++)
            if (move_ref(c, info->calendar_id, old, now, m.uid[i], err))
                goto done;
        fault_point("apply_after_relink_refs");
    }
    /* only the bookings that move are decided here, against the vanished
     * occurrence as calsync last saw it: the change they see is the split
     * (in the decide pass, as they will read once moved) */
    rc = decide_all(c, info, old, now, raw_json, raw_len, &m, 1, err);
    if (rc == 0 && info->pass == SYNC_PASS_APPLY)
        for (int i = 0; i < m.n; i++)
            log_info("apply.relink", "booking=%s from=%s to=%s", log_q(m.uid[i]),
                     log_q(old->id), log_q(now->id));
done:
    matches_free(&m);
    return rc;
}

int apply_decide(void *ud, const struct sync_info *info, struct cs_err *err)
{
    (void)ud;
    struct apply_thread *t = thread_state(info->window);
    if (!t)
        return cs_err_set(err, "out of memory");
    struct decisions *dec = &t->dec;
    if (dec->n_pending == 0)
        return 0;
    struct decided **todo = malloc(dec->n_pending * sizeof *todo);
    if (!todo)
        return cs_err_set(err, "out of memory");
    size_t n = 0;
    for (size_t i = 0; i < dec->cap; i++)
        if (dec->v[i] && dec->v[i]->pending)
            todo[n++] = dec->v[i];
    qsort(todo, n, sizeof *todo, by_order);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        struct decided *e = todo[i];
        struct request r;
        if (request_decode(e->key, e->key_len, &r)) {
            rc = cs_err_set(err, "a kept decision request does not decode");
            break;
        }
        /* No transaction is open here and no write lock is held: the
         * policy may run to its instruction limit without delaying any
         * other writer. */
        r.in.now_ms = time_now_ms();
        r.in.past = r.b.end_ms <= r.in.now_ms ||
                    (strcmp(r.in.kind, "time_change") == 0 && r.in.new_end_ms <= r.in.now_ms);
        struct policy_decision *d = &e->d;
        memset(d, 0, sizeof *d);
        struct policy_runner *pr = runner(t);
        if (!pr || policy_decide(pr, r.policy, &r.in, d) != 0) {
            snprintf(d->action, sizeof d->action, "flag");
            snprintf(d->reason, sizeof d->reason, "policy '%s' has no live version", r.policy);
            snprintf(d->policy, sizeof d->policy, "%.63s", r.policy);
            d->forced = 1;
        }
        check_applicable(d, &r);
        /* the record of what the policy got (its clock and `past`
         * included), built here once, outside any transaction */
        struct buf doc;
        buf_init(&doc);
        if (policy_input_json(&r.in, &doc)) {
            buf_free(&doc);
            rc = cs_err_set(err, "out of memory");
            break;
        }
        free(e->inputs);
        e->inputs = doc.data; /* taken from doc */
        /* the shadow decides the very same inputs (DESIGN §5); its
         * decision is kept beside the live one, recorded, never applied */
        e->has_shadow = r.shadow != NULL;
        if (r.shadow) {
            struct policy_decision *s = &e->shadow;
            memset(s, 0, sizeof *s);
            if (!pr || policy_decide_shadow(pr, r.shadow, &r.in, s) != 0) {
                snprintf(s->action, sizeof s->action, "flag");
                snprintf(s->reason, sizeof s->reason, "policy '%s' has no live version",
                         r.shadow);
                snprintf(s->policy, sizeof s->policy, "%.63s", r.shadow);
                s->forced = 1;
            }
            check_applicable(s, &r);
            char lp[128], ls[128], series[400];
            snprintf(series, sizeof series,
                     "calsync_policy_shadow_decisions_total{policy=\"%s\",shadow=\"%s\","
                     "outcome=\"%s\"}", metrics_label(d->policy, lp, sizeof lp),
                     metrics_label(s->policy, ls, sizeof ls),
                     strcmp(s->action, d->action) == 0 ? "agree" : "disagree");
            metrics_inc(series);
        }
        e->pending = 0;
        dec->n_pending--;
    }
    free(todo);
    return rc;
}

int apply_change(void *ud, struct store_conn *c, const struct sync_info *info,
                 const struct sync_event *old, const struct sync_event *now,
                 const char *raw_json, size_t raw_len, struct cs_err *err)
{
    (void)ud;
    struct matches m = {{0}, 0};
    int rc = find_bookings(c, info->calendar_id, now, &m, err);
    if (rc == 0)
        rc = decide_all(c, info, old, now, raw_json, raw_len, &m, 0, err);
    matches_free(&m);
    return rc;
}

int apply_move(void *ud, struct store_conn *c, const struct sync_info *info,
               const char *event_id, int64_t from, int64_t to, struct cs_err *err)
{
    (void)ud;
    struct matches m = {{0}, 0};
    struct buf snap_before, snap_after;
    int rc = -1;
    buf_init(&snap_before);
    buf_init(&snap_after);
    if (booking_refs_at(c, from, event_id, -1, collect, &m, err))
        goto done;
    const char *source = sync_source_name(info->source);
    for (int i = 0; i < m.n; i++) {
        struct booking b;
        int r = booking_get(c, m.uid[i], &b, err);
        if (r < 0)
            goto done;
        if (r == 0)
            continue;
        if (b.calendar_id != from || strcmp(b.status, "cancelled") == 0) {
            booking_free(&b);
            continue;
        }
        struct booking before = b;
        char reason[160], key[512];
        snprintf(reason, sizeof reason, "the event moved in Google from calendar %lld to "
                 "calendar %lld", (long long)from, (long long)to);
        /* updated_at in the key: the same booking may move back and forth */
        snprintf(key, sizeof key, "move|%lld|%lld|%s|%s|%lld", (long long)from,
                 (long long)to, event_id, b.uid, (long long)b.updated_ms);
        buf_reset(&snap_before);
        buf_reset(&snap_after);
        booking_snapshot_json(&before, &snap_before);
        b.calendar_id = to;
        b.updated_ms = time_now_ms();
        booking_snapshot_json(&b, &snap_after);
        struct audit_entry e = {
            .booking_uid = b.uid, .source = source, .change = "calendar_move",
            .action = "move", .reason = reason,
            .before = snap_before.data, .after = snap_after.data, .dedupe_key = key,
        };
        int dup = audit_append(c, &e, err);
        if (dup == 0 && (booking_move_calendar(c, b.uid, from, to, event_id, err) ||
                         booking_save(c, &b, err) ||
                         outbox_enqueue_booking(c, "BOOKING_UPDATED", &b, &before, reason,
                                                source, NULL, NULL, err)))
            dup = -1;
        if (dup == 0)
            log_info("apply.moved", "booking=%s event=%s from=%lld to=%lld source=%s",
                     log_q(b.uid), log_q(event_id), (long long)from, (long long)to, source);
        booking_free(&b);
        if (dup < 0)
            goto done;
    }
    rc = 0;
done:
    buf_free(&snap_before);
    buf_free(&snap_after);
    matches_free(&m);
    return rc;
}
