/* engine.c -- the registry of live policy versions and its reloads
 * (DESIGN §5).
 *
 * What it is for: keeping the policies directory live (hot reload on
 * inotify, SIGHUP and the API) so that decide.c can turn a classified
 * change into a validated decision with the calendar's live version.
 * Also the pieces every policy file shares: versions, reading files,
 * compiling and checking a source (internal.h).
 *
 * Main objects:
 *   struct policy_version  one compiled-and-checked source: name, version
 *                          (12 hex of SHA-256), the bytes. Immutable once
 *                          published, reference-counted, shared by runners.
 *   struct entry           the engine's record of one file: its live
 *                          version (NULL until one loads), the error of the
 *                          last failed load, whether the file was removed.
 *   (struct policy_runner, one per worker thread, is decide.c's: it
 *   re-reads the live versions through pol_eng_* when eng.gen moves.)
 *
 * Locking: eng.mu guards the entries (short sections: lookups, swaps);
 * eng.reload_mu serialises reloads, which compile outside eng.mu so
 * decisions never wait for a compile.
 *
 * Who reloads: one reload worker thread (reload.c). The inotify watcher,
 * SIGHUP and the API only ask it; the API waits at most
 * POLICY_RELOAD_WAIT_MS. Each file is read without blocking (a FIFO is
 * refused, not waited on) and compiled on a thread of its own that is
 * abandoned after POLICY_LOAD_TIMEOUT_MS (a top-level C call that does
 * not return), so no policy file can wedge the HTTP threads, the signal
 * thread or the shutdown (issue 21, item 3).
 */
#include "policy/internal.h"

#include "log.h"
#include "metrics.h"
#include "policy/reload.h"
#include "store/decisions.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define RELOAD_DELAY_MS 250
/* One file's compile and check; beyond it the file counts as failed (and
 * is published after all should the compile return: compile_job_late).
 * Real policies load in milliseconds; under valgrind in about 0.3 s. */
#define POLICY_LOAD_TIMEOUT_MS 3000
/* How long POST /v1/policies/reload waits for the reload it asked for:
 * one file that does not return is reported by then. */
#define POLICY_RELOAD_WAIT_MS (POLICY_LOAD_TIMEOUT_MS + 1000)

/* ------------------------------------------------------------- versions */

int policy_version_of(const char *src, size_t len, char out[13])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (!EVP_Digest(src, len, md, &n, EVP_sha256(), NULL) || n < 6)
        return -1;
    for (int i = 0; i < 6; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    return 0;
}

struct policy_version *pol_version_new(const char *name, const char *path,
                                          char *src, size_t len,
                                          const char *hash)
{
    struct policy_version *v = calloc(1, sizeof *v);
    if (!v || !(v->path = strdup(path))) {
        free(v);
        return NULL;
    }
    atomic_init(&v->refs, 1);
    atomic_init(&v->source_stored, 0);
    pthread_mutex_init(&v->check_mu, NULL);
    snprintf(v->name, sizeof v->name, "%s", name);
    snprintf(v->version, sizeof v->version, "%s", hash);
    v->src = src; /* taken */
    v->len = len;
    v->loaded_ms = time_now_ms();
    return v;
}

struct policy_version *pol_version_ref(struct policy_version *v)
{
    if (v)
        atomic_fetch_add(&v->refs, 1);
    return v;
}

void pol_version_unref(struct policy_version *v)
{
    if (v && atomic_fetch_sub(&v->refs, 1) == 1) {
        sandbox_free(v->check);
        pthread_mutex_destroy(&v->check_mu);
        free(v->path);
        free(v->src);
        free(v);
    }
}

/* --------------------------------------------------------- files, names */

int pol_valid_name(const char *s, size_t n)
{
    if (n == 0 || n > POLICY_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* Reads a whole file (at most POLICY_SRC_MAX bytes). 0 with *out (owned by
 * the caller, NUL-terminated) or -1 with err. For files the operator names
 * on the command line (CHANGE.json of `policy test`): may block. */
int pol_file_read(const char *path, char **out, size_t *len,
                     struct cs_err *err)
{
    int rc = -1;
    char *data = NULL;
    size_t n = 0, cap = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        cs_err_set(err, "%s: %s", path, strerror(errno));
        goto done;
    }
    for (;;) {
        if (n + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            char *p = realloc(data, cap);
            if (!p) {
                cs_err_set(err, "%s: out of memory", path);
                goto done;
            }
            data = p;
        }
        size_t got = fread(data + n, 1, cap - n - 1, f);
        n += got;
        if (n > POLICY_SRC_MAX) {
            cs_err_set(err, "%s:1: file larger than %d bytes", path, POLICY_SRC_MAX);
            goto done;
        }
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        cs_err_set(err, "%s: read error", path);
        goto done;
    }
    data[n] = '\0';
    *out = data;
    *len = n;
    data = NULL;
    rc = 0;
done:
    if (f)
        fclose(f);
    free(data);
    return rc;
}

static const char *file_kind(mode_t m)
{
    return S_ISDIR(m) ? "a directory" : S_ISFIFO(m) ? "a FIFO" : S_ISSOCK(m) ? "a socket"
           : S_ISCHR(m) ? "a character device" : S_ISBLK(m) ? "a block device"
           : "not a regular file";
}

/* Reads a policy file, never blocking: opened O_NONBLOCK (a FIFO opens at
 * once instead of waiting for a writer) and refused unless fstat says it
 * is a regular file of at most POLICY_SRC_MAX bytes. Symbolic links are
 * followed -- deploy tools and Kubernetes ConfigMaps link x.lua to the
 * real file -- and what counts is the file they lead to. Messages name
 * the file as `shown` ("x.lua:1: ..."). 0 with *out (owned by the caller,
 * NUL-terminated), or -1 with err. */
int pol_file_read_policy(const char *path, const char *shown, char **out,
                            size_t *len, struct cs_err *err)
{
    int rc = -1;
    char *data = NULL;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    struct stat st;
    if (fd < 0) {
        cs_err_set(err, "%s:1: %s", shown, strerror(errno));
        goto done;
    }
    if (fstat(fd, &st)) {
        cs_err_set(err, "%s:1: %s", shown, strerror(errno));
        goto done;
    }
    if (!S_ISREG(st.st_mode)) {
        cs_err_set(err, "%s:1: %s, not a regular file: not read", shown, file_kind(st.st_mode));
        goto done;
    }
    if (st.st_size > POLICY_SRC_MAX) {
        cs_err_set(err, "%s:1: file larger than %d bytes", shown, POLICY_SRC_MAX);
        goto done;
    }
    /* the size may change while it is read: never trust it, stop past the cap */
    size_t cap = (size_t)st.st_size + 1, n = 0;
    if (!(data = malloc(cap + 1))) {
        cs_err_set(err, "%s:1: out of memory", shown);
        goto done;
    }
    for (;;) {
        if (n == cap) {
            if (n > POLICY_SRC_MAX) {
                cs_err_set(err, "%s:1: file larger than %d bytes", shown, POLICY_SRC_MAX);
                goto done;
            }
            size_t ncap = cap * 2 > (size_t)POLICY_SRC_MAX + 1 ? (size_t)POLICY_SRC_MAX + 1
                                                              : cap * 2;
            char *p = realloc(data, ncap + 1);
            if (!p) {
                cs_err_set(err, "%s:1: out of memory", shown);
                goto done;
            }
            data = p;
            cap = ncap;
        }
        ssize_t got = read(fd, data + n, cap - n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            cs_err_set(err, "%s:1: %s", shown, strerror(errno));
            goto done;
        }
        if (got == 0)
            break;
        n += (size_t)got;
    }
    if (n > POLICY_SRC_MAX) {
        cs_err_set(err, "%s:1: file larger than %d bytes", shown, POLICY_SRC_MAX);
        goto done;
    }
    data[n] = '\0';
    *out = data;
    *len = n;
    data = NULL;
    rc = 0;
done:
    if (fd >= 0)
        close(fd);
    free(data);
    return rc;
}

struct sandbox_limits pol_limits_of(const struct config *cfg)
{
    struct sandbox_limits l = {cfg->policy_limits.instructions,
                               cfg->policy_limits.memory};
    return l;
}

/* Compiles and checks src in a fresh sandbox. 0 good, 1 bad (msg set),
 * -1 when the sandbox itself could not be built (msg set). keep (may be
 * NULL): on 0, the loaded sandbox is handed over there (the caller's,
 * sandbox_free) instead of being freed. */
static int compile_lim(const struct sandbox_limits *lim, const char *name,
                       const char *path, const char *src, size_t len,
                       struct sandbox_msg *msg, struct sandbox **keep)
{
    struct cs_err err = {{0}};
    struct sandbox *sb = sandbox_new(name, lim, &err);
    if (!sb) {
        snprintf(msg->text, sizeof msg->text, "%.200s:1: %.300s", path, err.msg);
        msg->trace[0] = '\0';
        return -1;
    }
    enum sandbox_rc rc = sandbox_load(sb, path, src, len, msg);
    if (rc == SANDBOX_OK && keep)
        *keep = sb;
    else
        sandbox_free(sb);
    return rc == SANDBOX_OK ? 0 : 1;
}

int pol_compile_check(const struct config *cfg, const char *name,
                         const char *path, const char *src, size_t len,
                         struct sandbox_msg *msg)
{
    struct sandbox_limits lim = pol_limits_of(cfg);
    return compile_lim(&lim, name, path, src, len, msg, NULL);
}

/* --------------------------------------------------------------- engine */

struct entry {
    char name[POLICY_NAME_MAX + 1];
    struct policy_version *live; /* NULL until a good load */
    char *error;                 /* last failed load, NULL once good */
    char bad_version[16];        /* hash of the content that failed */
    int removed;                 /* the file is gone; live kept */
    int seen;                    /* scratch: found by the current scan */
    int timed_out;               /* the error is a load that did not return */
};

static struct {
    pthread_mutex_t mu;        /* entries */
    pthread_mutex_t reload_mu; /* one reload at a time */
    const struct config *cfg;
    struct entry *v;
    int n, cap;
    atomic_uint gen;           /* bumped when a live version changes */
    struct reload_watcher *watch;
    struct reload_worker *worker; /* runs every reload; under mu */
    atomic_int stopping;       /* the reload in progress ends early */
    atomic_int last_oom;       /* the last reload ran out of resources */
    char loading[POLICY_NAME_MAX + 1]; /* compiling now ("" none); under mu */
    int64_t loading_since;     /* time_mono_ms() */
    /* every version published since start (a reference each), so the
     * source of a decision made just before a reload can still be
     * recorded with it (policy_source_copy); a few per edit of a file */
    struct policy_version **hist;
    int nhist, caphist;
} eng = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, NULL, NULL,
         0, 0, 0, NULL, NULL, 0, 0, "", 0, NULL, 0, 0};

/* Tests shorten the load timeout (policy_set_load_timeout_ms). */
static atomic_int load_timeout_ms = POLICY_LOAD_TIMEOUT_MS;

/* Caller holds eng.mu. */
static struct entry *find_entry(const char *name)
{
    for (int i = 0; i < eng.n; i++)
        if (strcmp(eng.v[i].name, name) == 0)
            return &eng.v[i];
    return NULL;
}

/* Caller holds eng.mu. NULL on OOM. */
static struct entry *add_entry(const char *name)
{
    if (eng.n == eng.cap) {
        int cap = eng.cap ? eng.cap * 2 : 16;
        struct entry *p = realloc(eng.v, (size_t)cap * sizeof *p);
        if (!p)
            return NULL;
        eng.v = p;
        eng.cap = cap;
    }
    struct entry *e = &eng.v[eng.n++];
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s", name);
    return e;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The policy names (file names without ".lua") of dir, sorted. Returns the
 * count (>= 0) with *out owned by the caller (free each and the array), or
 * -1 when the directory cannot be read (err set). Files whose name is not
 * a valid policy name are reported through `bad` when not NULL. */
int pol_file_scan_dir(const char *dir, char ***out, struct cs_err *err,
                    void (*bad)(const char *file, void *ud), void *ud)
{
    DIR *d = opendir(dir);
    if (!d) {
        cs_err_set(err, "%s: %s", dir, strerror(errno));
        return -1;
    }
    char **names = NULL;
    int n = 0, cap = 0, rc = -1;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (l < 5 || strcmp(de->d_name + l - 4, ".lua") != 0 || de->d_name[0] == '.')
            continue;
        if (!pol_valid_name(de->d_name, l - 4)) {
            if (bad)
                bad(de->d_name, ud);
            continue;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            char **p = realloc(names, (size_t)cap * sizeof *p);
            if (!p)
                goto oom;
            names = p;
        }
        if (!(names[n] = strndup(de->d_name, l - 4)))
            goto oom;
        n++;
    }
    if (n > 1)
        qsort(names, (size_t)n, sizeof *names, cmp_str);
    *out = names;
    names = NULL;
    rc = n;
    goto done;
oom:
    cs_err_set(err, "out of memory");
done:
    for (int i = 0; names && i < n; i++)
        free(names[i]);
    free(names);
    closedir(d);
    return rc;
}

static void count_load_error(const char *name)
{
    char lbl[128], series[256];
    snprintf(series, sizeof series, "calsync_policy_load_errors_total{policy=\"%s\"}",
             metrics_label(name, lbl, sizeof lbl));
    metrics_inc(series);
}

static void keep_source(struct policy_version *v);

/* Records the outcome of loading `name` with content `hash`: a good
 * source (src, taken: freed here on every path) becomes the live version,
 * a bad one the entry's error. `late`: the outcome of a compile that was
 * abandoned after its timeout -- it is only used while the entry still
 * holds that timeout for that very content (nothing newer was read since).
 * Returns 0 (published or nothing to do), 1 (the file failed) or -1 (OOM).
 * Takes eng.mu. */
static int publish(const char *name, const char *shown, char *src, size_t len,
                   const char *hash, const struct sandbox_msg *msg, int timed_out,
                   int late, struct sandbox *compiled)
{
    int bad = src == NULL, rc = 0;
    struct policy_version *v = NULL, *old = NULL, *went_live = NULL;
    if (!bad) {
        v = pol_version_new(name, shown, src, len, hash);
        if (!v) {
            free(src);
            sandbox_free(compiled);
            return -1;
        }
        v->check = compiled; /* freed with v unless it goes live */
    } else {
        sandbox_free(compiled);
    }
    char *error = bad ? strdup(msg->text) : NULL;
    if (bad && !error)
        return -1;

    pthread_mutex_lock(&eng.mu);
    struct entry *e = find_entry(name); /* the array may have moved */
    if (!e || (late && (!eng.cfg || !e->error || !e->timed_out ||
                        strcmp(e->bad_version, hash) != 0))) {
        pthread_mutex_unlock(&eng.mu);
        pol_version_unref(v);
        free(error);
        return 0;
    }
    if (bad) {
        free(e->error);
        e->error = error;
        e->timed_out = timed_out;
        snprintf(e->bad_version, sizeof e->bad_version, "%s", hash);
    } else {
        free(e->error);
        e->error = NULL;
        e->timed_out = 0;
        e->bad_version[0] = '\0';
        if (e->live && strcmp(e->live->version, v->version) == 0) {
            old = v; /* back to the live content: keep the live version */
        } else {
            old = e->live;
            e->live = v;
            atomic_fetch_add(&eng.gen, 1);
            if (eng.nhist == eng.caphist) {
                int cap = eng.caphist ? eng.caphist * 2 : 16;
                struct policy_version **h = realloc(eng.hist, (size_t)cap * sizeof *h);
                if (h) {
                    eng.hist = h;
                    eng.caphist = cap;
                }
            }
            /* on OOM the version is not kept for policy_source_copy: its
             * decisions are then recorded without their source (logged) */
            if (eng.nhist < eng.caphist)
                eng.hist[eng.nhist++] = pol_version_ref(v);
            if (!late)
                went_live = pol_version_ref(v);
        }
    }
    int has_live = e->live != NULL;
    char live_version[16];
    snprintf(live_version, sizeof live_version, "%s", has_live ? e->live->version : "-");
    pthread_mutex_unlock(&eng.mu);

    if (bad) {
        count_load_error(name);
        log_error("policy.load_failed", "policy=%s error=%s live_version=%s",
                  log_q(name), log_q(msg->text), live_version);
        if (msg->trace[0])
            log_debug("policy.load_trace", "policy=%s trace=%s", log_q(name),
                      log_q(msg->trace));
        rc = 1;
    } else if (old != v) {
        log_info("policy.loaded", "policy=%s version=%s%s", log_q(name), live_version,
                 late ? " note=\"after its load timeout\"" : "");
    }
    keep_source(went_live);
    pol_version_unref(went_live);
    if (old && old != v) {
        /* no longer live: its checking state goes (a check that holds a
         * reference on it finishes first, under check_mu) */
        pthread_mutex_lock(&old->check_mu);
        old->retired = 1;
        sandbox_free(old->check);
        old->check = NULL;
        pthread_mutex_unlock(&old->check_mu);
    }
    pol_version_unref(old);
    return rc;
}

/* DESIGN §2: every policy source that was ever live is kept by version.
 * Written when a version goes live, by the reload worker (its own store
 * connection, outside any transaction); apply.c writes it again with the
 * first decision of the version, so a failure here (logged) loses
 * nothing a replay needs. Without a store (the unit tests, the CLI) there
 * is nothing to keep. A compile that publishes late (its own detached
 * thread, possibly during shutdown) leaves it to apply.c. */
static void keep_source(struct policy_version *v)
{
    struct cs_err err = {{0}};
    if (!v)
        return;
    struct store_conn *c = store_conn(&err);
    if (!c)
        return;
    if (policy_source_keep(c, v->name, v->version, v->src, v->len, &err))
        log_warn("policy.source_not_kept", "policy=%s version=%s error=%s", log_q(v->name),
                 v->version, log_q(err.msg));
    else
        atomic_store(&v->source_stored, 1);
}

/* A compile on a thread of its own (reload_call_bounded): owns everything
 * it touches, so it can outlive a timeout and the engine. */
struct compile_job {
    struct sandbox_limits lim;
    char name[POLICY_NAME_MAX + 1];
    char shown[POLICY_NAME_MAX + 8]; /* "<name>.lua" */
    char hash[13];
    char *src;                       /* owned */
    size_t len;
    int rc;                          /* compile_lim's */
    struct sandbox_msg msg;
    struct sandbox *sb;              /* owned: the loaded state, on rc 0 */
};

static void compile_job_run(void *p)
{
    struct compile_job *j = p;
    j->rc = compile_lim(&j->lim, j->name, j->shown, j->src, j->len, &j->msg, &j->sb);
}

/* Runs on the abandoned thread when its compile finally returns: a good
 * source is published after all (a slow machine is not a bad policy), a
 * bad one keeps the timeout error. Frees the job. */
static void compile_job_late(void *p)
{
    struct compile_job *j = p;
    log_warn("policy.late_load", "policy=%s version=%s result=%s", log_q(j->name), j->hash,
             j->rc == 0 ? "ok" : "failed");
    if (j->rc == 0) {
        publish(j->name, j->shown, j->src, j->len, j->hash, &j->msg, 0, 1, j->sb);
        j->src = NULL;
        j->sb = NULL;
    }
    sandbox_free(j->sb);
    free(j->src);
    free(j);
}

/* Compiles and checks *src (taken; handed back on every path but a
 * timeout or a shutdown) within the load timeout. 0 good, 1 bad (msg
 * set), -1 when no sandbox or thread could be had (msg set), -2 when the
 * engine is stopping. *timed_out is set when the compile did not return
 * in time. */
static int compile_bounded(const char *name, const char *shown, const char *hash,
                           char **src, size_t len, struct sandbox_msg *msg,
                           int *timed_out, struct sandbox **compiled)
{
    *timed_out = 0;
    *compiled = NULL;
    struct compile_job *j = calloc(1, sizeof *j);
    if (!j) {
        snprintf(msg->text, sizeof msg->text, "%s:1: out of memory", shown);
        return -1;
    }
    j->lim = pol_limits_of(eng.cfg);
    snprintf(j->name, sizeof j->name, "%s", name);
    snprintf(j->shown, sizeof j->shown, "%s", shown);
    snprintf(j->hash, sizeof j->hash, "%s", hash);
    j->src = *src;
    j->len = len;
    *src = NULL;
    pthread_mutex_lock(&eng.mu);
    snprintf(eng.loading, sizeof eng.loading, "%s", name);
    eng.loading_since = time_mono_ms();
    pthread_mutex_unlock(&eng.mu);
    int ms = atomic_load(&load_timeout_ms);
    enum reload_call_rc r = reload_call_bounded(compile_job_run, compile_job_late, j, ms,
                                                &eng.stopping);
    pthread_mutex_lock(&eng.mu);
    eng.loading[0] = '\0';
    pthread_mutex_unlock(&eng.mu);
    if (r == RELOAD_CALL_CANCELLED) {
        /* shutting down: the job is the thread's; nothing is recorded */
        snprintf(msg->text, sizeof msg->text, "%s:1: load abandoned: shutting down", shown);
        msg->trace[0] = '\0';
        return -2;
    }
    if (r == RELOAD_CALL_TIMEOUT) {
        /* the job is the thread's now */
        *timed_out = 1;
        snprintf(msg->text, sizeof msg->text, "%s:1: loading did not finish within %d ms "
                 "(a call at the top level that does not return?); the load was "
                 "abandoned", shown, ms);
        msg->trace[0] = '\0';
        return 1;
    }
    *src = j->src;
    int rc = j->rc;
    if (r == RELOAD_CALL_DONE) {
        *msg = j->msg;
        *compiled = j->sb; /* NULL unless rc is 0 */
        j->sb = NULL;
    } else if (reload_calls_stuck() >= RELOAD_STUCK_MAX) {
        rc = 1;
        snprintf(msg->text, sizeof msg->text, "%s:1: not loaded: %d earlier loads have not "
                 "returned after their timeout; restart calsync", shown, RELOAD_STUCK_MAX);
        msg->trace[0] = '\0';
    } else {
        rc = -1;
        snprintf(msg->text, sizeof msg->text, "%s:1: cannot start a load thread", shown);
    }
    sandbox_free(j->sb);
    free(j);
    return rc;
}

/* Loads one file if its content changed. Returns 0 (good or unchanged),
 * 1 (the file on disk fails: its error is recorded) or -1 (OOM). Caller
 * holds eng.reload_mu (not eng.mu). */
static int reload_one(const char *name)
{
    char path[4096], shown[POLICY_NAME_MAX + 8];
    snprintf(path, sizeof path, "%s/%s.lua", eng.cfg->policies, name);
    snprintf(shown, sizeof shown, "%s.lua", name);
    struct cs_err err = {{0}};
    struct sandbox_msg msg = {{0}, {0}};
    char hash[13] = "";
    char *src = NULL;
    size_t len = 0;
    int bad = 0, timed_out = 0;

    if (pol_file_read_policy(path, shown, &src, &len, &err)) {
        snprintf(msg.text, sizeof msg.text, "%s", err.msg);
        bad = 1;
    } else if (policy_version_of(src, len, hash)) {
        free(src);
        return -1;
    }

    pthread_mutex_lock(&eng.mu);
    struct entry *e = find_entry(name);
    if (!e && !(e = add_entry(name))) {
        pthread_mutex_unlock(&eng.mu);
        free(src);
        return -1;
    }
    e->seen = 1;
    if (e->removed) {
        log_info("policy.restored", "policy=%s", log_q(name));
        e->removed = 0;
    }
    int unchanged = !bad && e->live && !e->error && strcmp(e->live->version, hash) == 0;
    /* content that failed (a timeout included) is not compiled again until
     * it changes: a load that never returns is abandoned once, not on
     * every reload */
    int same_bad = !bad && e->error && strcmp(e->bad_version, hash) == 0;
    pthread_mutex_unlock(&eng.mu);
    if (unchanged) {
        free(src);
        return 0;
    }
    if (same_bad) {
        free(src);
        return 1;
    }

    struct sandbox *compiled = NULL;
    if (!bad) {
        int c = compile_bounded(name, shown, hash, &src, len, &msg, &timed_out, &compiled);
        if (c == -2)
            return 0; /* shutting down: record nothing */
        if (c < 0) {
            sandbox_free(compiled);
            free(src);
            log_error("policy.load_failed", "policy=%s error=%s", log_q(name),
                      log_q(msg.text));
            return -1;
        }
        if (c) {
            bad = 1;
            free(src);
            src = NULL;
        }
    }
    return publish(name, shown, bad ? NULL : src, len, hash, &msg, timed_out, 0, compiled);
}

/* One reload of the whole directory, on the reload worker. Returns the
 * number of files that failed, or -1 on a resource failure. */
static int reload_run(void)
{
    pthread_mutex_lock(&eng.reload_mu);
    struct cs_err err = {{0}};
    char **names = NULL;
    int n = pol_file_scan_dir(eng.cfg->policies, &names, &err, NULL, NULL);
    int failed = 0, oom = 0, stopped = 0;
    if (n < 0) {
        log_warn("policy.scan_failed", "dir=%s error=%s", log_q(eng.cfg->policies),
                 log_q(err.msg));
        n = 0;
    }
    pthread_mutex_lock(&eng.mu);
    for (int i = 0; i < eng.n; i++)
        eng.v[i].seen = 0;
    pthread_mutex_unlock(&eng.mu);
    for (int i = 0; i < n; i++) {
        if (!stopped && atomic_load(&eng.stopping))
            stopped = 1; /* shutting down: leave the rest */
        int r = stopped ? 0 : reload_one(names[i]);
        if (r < 0)
            oom = 1;
        else if (r > 0)
            failed++;
        free(names[i]);
    }
    free(names);

    /* files gone from disk: keep what is live, forget what never was (not
     * after a cut-short scan, which saw only some of them) */
    pthread_mutex_lock(&eng.mu);
    for (int i = 0; i < eng.n && !stopped;) {
        struct entry *e = &eng.v[i];
        if (e->seen) {
            i++;
            continue;
        }
        if (!e->live) {
            free(e->error);
            eng.v[i] = eng.v[--eng.n];
            continue;
        }
        if (!e->removed) {
            e->removed = 1;
            free(e->error);
            e->error = NULL;
            e->timed_out = 0;
            log_warn("policy.removed", "policy=%s live_version=%s note=%s",
                     log_q(e->name), e->live->version,
                     log_q("kept live until restart for calendars using it"));
        }
        i++;
    }
    pthread_mutex_unlock(&eng.mu);
    pthread_mutex_unlock(&eng.reload_mu);
    return oom ? -1 : failed;
}

/* The reload worker's function: one reload (all requests made before it
 * started are covered by it). */
static void reload_work(void *ud)
{
    (void)ud;
    int failed = reload_run();
    atomic_store(&eng.last_oom, failed < 0);
    if (failed)
        log_warn("policy.reload", "failed=%d", failed);
}

/* The inotify watcher's callback: ask, never load on the watcher thread. */
static void reload_done(void *ud)
{
    (void)ud;
    policy_reload_request();
}

void policy_reload_request(void)
{
    pthread_mutex_lock(&eng.mu);
    if (eng.worker)
        reload_worker_request(eng.worker);
    pthread_mutex_unlock(&eng.mu);
}

void policy_set_load_timeout_ms(int ms)
{
    atomic_store(&load_timeout_ms, ms > 0 ? ms : POLICY_LOAD_TIMEOUT_MS);
}

/* Appends {"name","error"} of every file whose last load failed (and, when
 * the reload asked for did not finish, of the one still loading) to
 * errors as a JSON array. The count. Caller holds eng.mu. */
static int errors_json(struct buf *errors, int finished)
{
    int k = 0;
    if (errors)
        buf_puts(errors, "[");
    for (int i = 0; i < eng.n; i++) {
        if (!eng.v[i].error || eng.v[i].removed)
            continue;
        if (errors) {
            buf_puts(errors, k ? ",{\"name\":" : "{\"name\":");
            buf_json_strz(errors, eng.v[i].name);
            buf_puts(errors, ",\"error\":");
            buf_json_strz(errors, eng.v[i].error);
            buf_puts(errors, "}");
        }
        k++;
    }
    if (!finished && eng.loading[0]) {
        if (errors) {
            char m[256];
            snprintf(m, sizeof m, "%s.lua:1: still loading after %lld ms; the reload "
                     "goes on in the background (see GET /v1/policies)", eng.loading,
                     (long long)(time_mono_ms() - eng.loading_since));
            buf_puts(errors, k ? ",{\"name\":" : "{\"name\":");
            buf_json_strz(errors, eng.loading);
            buf_puts(errors, ",\"error\":");
            buf_json_strz(errors, m);
            buf_puts(errors, "}");
        }
        k++;
    }
    if (errors)
        buf_puts(errors, "]");
    return k;
}

int policy_reload(struct buf *errors)
{
    pthread_mutex_lock(&eng.mu);
    struct reload_worker *w = eng.worker;
    uint64_t ticket = w ? reload_worker_request(w) : 0;
    pthread_mutex_unlock(&eng.mu);
    if (!w) {
        if (errors)
            buf_puts(errors, "[]");
        return 0;
    }
    int finished = reload_worker_wait(w, ticket, POLICY_RELOAD_WAIT_MS);
    if (!finished)
        log_warn("policy.reload_slow", "waited_ms=%d note=%s", POLICY_RELOAD_WAIT_MS,
                 log_q("answered before the reload finished"));
    if (finished && atomic_load(&eng.last_oom))
        return -1;
    pthread_mutex_lock(&eng.mu);
    int failed = errors_json(errors, finished);
    pthread_mutex_unlock(&eng.mu);
    return failed;
}

int policy_engine_start(const struct config *cfg, struct cs_err *err)
{
    eng.cfg = cfg;
    atomic_store(&eng.stopping, 0);
    struct reload_worker *w = reload_worker_start(reload_work, NULL, err);
    if (!w) {
        policy_engine_stop();
        return -1;
    }
    pthread_mutex_lock(&eng.mu);
    eng.worker = w;
    pthread_mutex_unlock(&eng.mu);
    /* watch first: a file saved while the first scan runs is seen */
    eng.watch = reload_watch_start(cfg->policies, RELOAD_DELAY_MS, reload_done,
                                   NULL, err);
    if (!eng.watch) {
        policy_engine_stop();
        return -1;
    }
    /* the first load, waited for: bounded, since every file is read
     * without blocking and compiled within the load timeout */
    if (!reload_worker_wait(w, reload_worker_request(w), -1)) {
        policy_engine_stop();
        return cs_err_set(err, "policy reload worker stopped");
    }
    pthread_mutex_lock(&eng.mu);
    int failed = errors_json(NULL, 1);
    pthread_mutex_unlock(&eng.mu);
    log_info("policy.engine_started", "dir=%s failed=%d", log_q(cfg->policies), failed);
    return 0;
}

void policy_engine_stop(void)
{
    reload_watch_stop(eng.watch);
    eng.watch = NULL;
    /* the reload in progress stops after its current file (a compile that
     * does not return is abandoned at its timeout, so this is bounded) */
    atomic_store(&eng.stopping, 1);
    pthread_mutex_lock(&eng.mu);
    struct reload_worker *w = eng.worker;
    eng.worker = NULL;
    pthread_mutex_unlock(&eng.mu);
    reload_worker_stop(w);
    pthread_mutex_lock(&eng.reload_mu);
    pthread_mutex_lock(&eng.mu);
    for (int i = 0; i < eng.n; i++) {
        pol_version_unref(eng.v[i].live);
        free(eng.v[i].error);
    }
    free(eng.v);
    eng.v = NULL;
    eng.n = eng.cap = 0;
    for (int i = 0; i < eng.nhist; i++)
        pol_version_unref(eng.hist[i]);
    free(eng.hist);
    eng.hist = NULL;
    eng.nhist = eng.caphist = 0;
    eng.cfg = NULL;
    atomic_fetch_add(&eng.gen, 1);
    pthread_mutex_unlock(&eng.mu);
    pthread_mutex_unlock(&eng.reload_mu);
}

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const struct entry *)a)->name, ((const struct entry *)b)->name);
}

int policy_list_json(struct buf *out)
{
    int rc = 0;
    pthread_mutex_lock(&eng.mu);
    if (eng.n > 1)
        qsort(eng.v, (size_t)eng.n, sizeof *eng.v, cmp_entry);
    rc |= buf_puts(out, "{\"policies\":[");
    for (int i = 0; i < eng.n; i++) {
        const struct entry *e = &eng.v[i];
        rc |= buf_puts(out, i ? ",{\"name\":" : "{\"name\":");
        rc |= buf_json_strz(out, e->name);
        rc |= buf_puts(out, ",\"version\":");
        rc |= buf_json_strz(out, e->live ? e->live->version : NULL);
        rc |= buf_puts(out, ",\"loaded_at\":");
        if (e->live) {
            char ts[TIME_RFC3339_MAX];
            time_format_rfc3339(e->live->loaded_ms, ts);
            rc |= buf_json_strz(out, ts);
        } else {
            rc |= buf_puts(out, "null");
        }
        if (e->error) {
            rc |= buf_puts(out, ",\"error\":");
            rc |= buf_json_strz(out, e->error);
        }
        if (e->removed)
            rc |= buf_puts(out, ",\"removed\":true");
        rc |= buf_puts(out, "}");
    }
    rc |= buf_puts(out, "]}");
    pthread_mutex_unlock(&eng.mu);
    return rc ? -1 : 0;
}

int policy_is_live(const char *name)
{
    pthread_mutex_lock(&eng.mu);
    const struct entry *e = find_entry(name);
    int live = e && e->live && !e->removed;
    pthread_mutex_unlock(&eng.mu);
    return live;
}

int policy_all_live(void)
{
    int ok = 1;
    pthread_mutex_lock(&eng.mu);
    for (int i = 0; i < eng.n; i++)
        if (!eng.v[i].live)
            ok = 0;
    pthread_mutex_unlock(&eng.mu);
    return ok;
}


/* ---------------------------------------------------- engine, for runners */

static atomic_uint check_builds;

unsigned pol_eng_check_builds(void)
{
    return atomic_load(&check_builds);
}

int policy_settings_validate(const char *name, const char *settings_json, char *why,
                             size_t whylen)
{
    struct cs_err err = {{0}};
    struct sandbox_msg msg = {{0}, {0}};
    pthread_mutex_lock(&eng.mu);
    const struct entry *e = find_entry(name);
    struct policy_version *v = pol_version_ref(e ? e->live : NULL);
    struct sandbox_limits lim = {0, 0};
    if (eng.cfg)
        lim = pol_limits_of(eng.cfg);
    pthread_mutex_unlock(&eng.mu);
    int rc = -1;
    struct sandbox *sb = NULL, *tmp = NULL;
    if (!v || !lim.instructions) {
        snprintf(why, whylen, "no live version of policy '%.63s'", name);
        goto out;
    }
    /* the state the reload compiled this version in (v->check): one check
     * at a time per version, each bounded by the limits like a call. Only
     * when there is none (a memory-cap hit dropped it, or the version was
     * replaced after we took it) is the policy compiled here; a retired
     * version's state is not kept */
    pthread_mutex_lock(&v->check_mu);
    if (v->check && sandbox_dead(v->check)) {
        sandbox_free(v->check);
        v->check = NULL;
    }
    if (!(sb = v->check)) {
        atomic_fetch_add(&check_builds, 1);
        if (!(sb = sandbox_new(v->name, &lim, &err))) {
            snprintf(why, whylen, "settings could not be checked: %s", err.msg);
            goto done;
        }
        if (sandbox_load(sb, v->path, v->src, v->len, &msg) != SANDBOX_OK) {
            sandbox_free(sb);
            snprintf(why, whylen, "settings could not be checked: %s", msg.text);
            goto done;
        }
        if (v->retired)
            tmp = sb;
        else
            v->check = sb;
    }
    rc = sandbox_validate_settings(sb, settings_json, strlen(settings_json), why, whylen);
done:
    pthread_mutex_unlock(&v->check_mu);
    sandbox_free(tmp);
out:
    pol_version_unref(v);
    return rc;
}

unsigned pol_eng_gen(void)
{
    return atomic_load(&eng.gen);
}

void pol_eng_lock(void)
{
    pthread_mutex_lock(&eng.mu);
}

void pol_eng_unlock(void)
{
    pthread_mutex_unlock(&eng.mu);
}

struct policy_version *pol_eng_live_locked(const char *name)
{
    const struct entry *e = find_entry(name);
    return e ? e->live : NULL;
}

int policy_source_stored(const char *name, const char *version)
{
    int stored = 0;
    pthread_mutex_lock(&eng.mu);
    /* newest first: a decision's version is almost always the last one */
    for (int i = eng.nhist - 1; i >= 0; i--)
        if (strcmp(eng.hist[i]->version, version) == 0 &&
            strcmp(eng.hist[i]->name, name) == 0) {
            stored = atomic_load(&eng.hist[i]->source_stored);
            break;
        }
    pthread_mutex_unlock(&eng.mu);
    return stored;
}

int policy_source_copy(const char *name, const char *version, char **src, size_t *len)
{
    struct policy_version *v = NULL;
    *src = NULL;
    *len = 0;
    pthread_mutex_lock(&eng.mu);
    for (int i = eng.nhist - 1; i >= 0 && !v; i--)
        if (strcmp(eng.hist[i]->name, name) == 0 && strcmp(eng.hist[i]->version, version) == 0)
            v = pol_version_ref(eng.hist[i]);
    pthread_mutex_unlock(&eng.mu);
    if (!v)
        return 0;
    int rc = 1;
    if (!(*src = malloc(v->len + 1))) {
        rc = -1;
    } else {
        memcpy(*src, v->src, v->len);
        (*src)[v->len] = '\0';
        *len = v->len;
    }
    pol_version_unref(v);
    return rc;
}
