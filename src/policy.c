/* policy.c -- the Lua policy engine (DESIGN §5).
 *
 * What it is for: turning a classified change into a validated decision
 * by running the calendar's policy in a sandbox (sandbox.c), and keeping
 * the policies directory live (hot reload on inotify, SIGHUP and the API).
 *
 * Main objects:
 *   struct policy_version  one compiled-and-checked source: name, version
 *                          (12 hex of SHA-256), the bytes. Immutable once
 *                          published, reference-counted, shared by runners.
 *   struct entry           the engine's record of one file: its live
 *                          version (NULL until one loads), the error of the
 *                          last failed load, whether the file was removed.
 *   struct policy_runner   one per worker thread: a sandbox per policy it
 *                          used, rebuilt when the engine's generation moves
 *                          and the live version changed, or after a state
 *                          hit its memory cap.
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
#include "policy.h"

#include "json.h"
#include "log.h"
#include "metrics.h"
#include "reload.h"
#include "sandbox.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define POLICY_NAME_MAX 63
#define POLICY_SRC_MAX (1 << 20)
#define RELOAD_DELAY_MS 250
/* One file's compile and check; beyond it the file counts as failed (and
 * is published after all should the compile return: compile_job_late).
 * Real policies load in milliseconds; under valgrind in about 0.3 s. */
#define POLICY_LOAD_TIMEOUT_MS 3000
/* How long POST /v1/policies/reload waits for the reload it asked for:
 * one file that does not return is reported by then. */
#define POLICY_RELOAD_WAIT_MS (POLICY_LOAD_TIMEOUT_MS + 1000)

/* ------------------------------------------------------------- versions */

struct policy_version {
    atomic_int refs;
    char name[POLICY_NAME_MAX + 1];
    char version[16];
    char *path; /* "<name>.lua" (relative to the policies directory, so
                 * no message, flag reason or webhook shows where the
                 * server keeps its files); the file given to the CLI */
    char *src;
    size_t len;
    int64_t loaded_ms;
};

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

static struct policy_version *version_new(const char *name, const char *path,
                                          char *src, size_t len,
                                          const char *hash)
{
    struct policy_version *v = calloc(1, sizeof *v);
    if (!v || !(v->path = strdup(path))) {
        free(v);
        return NULL;
    }
    atomic_init(&v->refs, 1);
    snprintf(v->name, sizeof v->name, "%s", name);
    snprintf(v->version, sizeof v->version, "%s", hash);
    v->src = src; /* taken */
    v->len = len;
    v->loaded_ms = time_now_ms();
    return v;
}

static struct policy_version *version_ref(struct policy_version *v)
{
    if (v)
        atomic_fetch_add(&v->refs, 1);
    return v;
}

static void version_unref(struct policy_version *v)
{
    if (v && atomic_fetch_sub(&v->refs, 1) == 1) {
        free(v->path);
        free(v->src);
        free(v);
    }
}

/* --------------------------------------------------------- files, names */

static int valid_name(const char *s, size_t n)
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
static int read_file(const char *path, char **out, size_t *len,
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
static int read_policy_file(const char *path, const char *shown, char **out,
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

static struct sandbox_limits limits_of(const struct config *cfg)
{
    struct sandbox_limits l = {cfg->policy_limits.instructions,
                               cfg->policy_limits.memory};
    return l;
}

/* Compiles and checks src in a fresh sandbox. 0 good, 1 bad (msg set),
 * -1 when the sandbox itself could not be built (msg set). */
static int compile_lim(const struct sandbox_limits *lim, const char *name,
                       const char *path, const char *src, size_t len,
                       struct sandbox_msg *msg)
{
    struct cs_err err = {{0}};
    struct sandbox *sb = sandbox_new(name, lim, &err);
    if (!sb) {
        snprintf(msg->text, sizeof msg->text, "%.200s:1: %.300s", path, err.msg);
        msg->trace[0] = '\0';
        return -1;
    }
    enum sandbox_rc rc = sandbox_load(sb, path, src, len, msg);
    sandbox_free(sb);
    return rc == SANDBOX_OK ? 0 : 1;
}

static int compile_check(const struct config *cfg, const char *name,
                         const char *path, const char *src, size_t len,
                         struct sandbox_msg *msg)
{
    struct sandbox_limits lim = limits_of(cfg);
    return compile_lim(&lim, name, path, src, len, msg);
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
} eng = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, NULL, NULL,
         0, 0, 0, NULL, NULL, 0, 0, "", 0};

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
static int scan_dir(const char *dir, char ***out, struct cs_err *err,
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
        if (!valid_name(de->d_name, l - 4)) {
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

/* Records the outcome of loading `name` with content `hash`: a good
 * source (src, taken: freed here on every path) becomes the live version,
 * a bad one the entry's error. `late`: the outcome of a compile that was
 * abandoned after its timeout -- it is only used while the entry still
 * holds that timeout for that very content (nothing newer was read since).
 * Returns 0 (published or nothing to do), 1 (the file failed) or -1 (OOM).
 * Takes eng.mu. */
static int publish(const char *name, const char *shown, char *src, size_t len,
                   const char *hash, const struct sandbox_msg *msg, int timed_out,
                   int late)
{
    int bad = src == NULL, rc = 0;
    struct policy_version *v = NULL, *old = NULL;
    if (!bad) {
        v = version_new(name, shown, src, len, hash);
        if (!v) {
            free(src);
            return -1;
        }
    }
    char *error = bad ? strdup(msg->text) : NULL;
    if (bad && !error)
        return -1;

    pthread_mutex_lock(&eng.mu);
    struct entry *e = find_entry(name); /* the array may have moved */
    if (!e || (late && (!eng.cfg || !e->error || !e->timed_out ||
                        strcmp(e->bad_version, hash) != 0))) {
        pthread_mutex_unlock(&eng.mu);
        version_unref(v);
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
    version_unref(old);
    return rc;
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
};

static void compile_job_run(void *p)
{
    struct compile_job *j = p;
    j->rc = compile_lim(&j->lim, j->name, j->shown, j->src, j->len, &j->msg);
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
        publish(j->name, j->shown, j->src, j->len, j->hash, &j->msg, 0, 1);
        j->src = NULL;
    }
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
                           int *timed_out)
{
    *timed_out = 0;
    struct compile_job *j = calloc(1, sizeof *j);
    if (!j) {
        snprintf(msg->text, sizeof msg->text, "%s:1: out of memory", shown);
        return -1;
    }
    j->lim = limits_of(eng.cfg);
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
    } else if (reload_calls_stuck() >= RELOAD_STUCK_MAX) {
        rc = 1;
        snprintf(msg->text, sizeof msg->text, "%s:1: not loaded: %d earlier loads have not "
                 "returned after their timeout; restart calsync", shown, RELOAD_STUCK_MAX);
        msg->trace[0] = '\0';
    } else {
        rc = -1;
        snprintf(msg->text, sizeof msg->text, "%s:1: cannot start a load thread", shown);
    }
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

    if (read_policy_file(path, shown, &src, &len, &err)) {
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

    if (!bad) {
        int c = compile_bounded(name, shown, hash, &src, len, &msg, &timed_out);
        if (c == -2)
            return 0; /* shutting down: record nothing */
        if (c < 0) {
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
    return publish(name, shown, bad ? NULL : src, len, hash, &msg, timed_out, 0);
}

/* One reload of the whole directory, on the reload worker. Returns the
 * number of files that failed, or -1 on a resource failure. */
static int reload_run(void)
{
    pthread_mutex_lock(&eng.reload_mu);
    struct cs_err err = {{0}};
    char **names = NULL;
    int n = scan_dir(eng.cfg->policies, &names, &err, NULL, NULL);
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
        version_unref(eng.v[i].live);
        free(eng.v[i].error);
    }
    free(eng.v);
    eng.v = NULL;
    eng.n = eng.cap = 0;
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

/* ------------------------------------------------------------ arguments */

/* The arguments of a call are built once per state and refilled per call
 * (docs/internals/policy.md, "Arguments"). The skeleton, a table in the
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
 * first read (lazy_index): a policy pays only for what it reads. */

enum arg { ARG_OLD, ARG_NEW, ARG_INSTANCE, ARG_CALENDAR, ARG_BOOKING, ARG_CHANGE,
           ARG_CTX, ARG_N };

/* The field names, interned once per state and kept in the skeleton: a
 * raw set with a key from there hashes and compares nothing. */
enum key { K_START, K_END, K_TITLE, K_SERIES_ID, K_ORIGINAL_START, K_ID, K_UID,
           K_CALENDAR_ID, K_STATUS, K_NEEDS_REVIEW, K_EVENT_ID, K_CANCELLED_BY,
           K_CANCEL_REASON, K_UPDATED_AT, K_KIND, K_OLD, K_NEW, K_INSTANCE,
           K_PAST, K_SOURCE, K_EVENT, K_NOW, K_CALENDAR, K_SETTINGS, K_N };
static const char *const key_names[K_N] = {
    "start", "end", "title", "series_id", "original_start", "id", "uid",
    "calendar_id", "status", "needs_review", "event_id", "cancelled_by",
    "cancel_reason", "updated_at", "kind", "old", "new", "instance", "past",
    "source", "event", "now", "calendar", "settings",
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
    [ARG_OLD] = 3, [ARG_NEW] = 3, [ARG_INSTANCE] = 2, [ARG_CALENDAR] = 1,
    [ARG_BOOKING] = 12, [ARG_CHANGE] = 8, [ARG_CTX] = 4,
};

static int lazy_index(lua_State *L);

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

/* Pushes the deep read-only decoding of text, or returns 0. */
static int push_lazy_json(lua_State *L, const char *text, size_t len)
{
    if (!text)
        return 0;
    sandbox_push_json(L, text, len);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return 0;
    }
    if (lua_type(L, -1) == LUA_TTABLE)
        sandbox_readonly(L);
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
            made = push_lazy_json(L, in->event_json, in->event_len);
        else if (strcmp(k, "old") == 0)
            made = push_nested(L, sk, ARG_OLD, in, &st->tm);
        else if (strcmp(k, "new") == 0)
            made = push_nested(L, sk, ARG_NEW, in, &st->tm);
        else if (strcmp(k, "instance") == 0)
            made = push_nested(L, sk, ARG_INSTANCE, in, &st->tm);
    } else if (strcmp(k, "settings") == 0) {
        const char *s = in->settings_json ? in->settings_json : "{}";
        made = push_lazy_json(L, s, strlen(s));
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
 * first. `in` must stay valid until args_release(). */
static void push_args(lua_State *L, const struct policy_input *in)
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
static void args_release(lua_State *L)
{
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &args_key) == LUA_TTABLE) {
        struct args_state *st = args_state(L, lua_gettop(L));
        if (st)
            st->in = NULL;
    }
    lua_pop(L, 1);
}

/* ------------------------------------------------------------- decisions */

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
    push_args(L, c->in);
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
    char lbl[128], series[256];
    snprintf(series, sizeof series,
             "calsync_policy_errors_total{policy=\"%s\",kind=\"%s\"}",
             metrics_label(out->policy, lbl, sizeof lbl), rc_kind(rc));
    metrics_inc(series);
    log_warn("policy.error", "policy=%s version=%s kind=%s reason=%s", log_q(out->policy),
             out->version, rc_kind(rc), log_q(out->reason));
    if (trace && *trace)
        log_debug("policy.error_trace", "policy=%s trace=%s", log_q(out->policy),
                  log_q(trace));
}

static void count_decision(const struct policy_decision *out)
{
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
static void decide_with(const struct config *cfg, struct policy_version *v,
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
        struct sandbox_limits lim = limits_of(cfg);
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
    args_release(L);
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
    r->gen = atomic_load(&eng.gen) - 1; /* look at the engine on first use */
    return r;
}

void policy_runner_free(struct policy_runner *r)
{
    if (!r)
        return;
    for (int i = 0; i < r->n; i++) {
        sandbox_free(r->slots[i].sb);
        version_unref(r->slots[i].ver);
    }
    free(r->slots);
    free(r);
}

/* Brings every slot to the engine's live version. */
static void runner_refresh(struct policy_runner *r, unsigned gen)
{
    pthread_mutex_lock(&eng.mu);
    for (int i = 0; i < r->n; i++) {
        struct slot *s = &r->slots[i];
        const struct entry *e = find_entry(s->name);
        struct policy_version *live = e ? e->live : NULL;
        if (live == s->ver)
            continue;
        version_unref(s->ver);
        s->ver = version_ref(live);
        sandbox_free(s->sb);
        s->sb = NULL;
    }
    pthread_mutex_unlock(&eng.mu);
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
    pthread_mutex_lock(&eng.mu);
    const struct entry *e = find_entry(name);
    s->ver = version_ref(e ? e->live : NULL);
    pthread_mutex_unlock(&eng.mu);
    if (!s->ver)
        return NULL;
    r->n++;
    return s;
}

int policy_decide(struct policy_runner *r, const char *policy_name,
                  const struct policy_input *in, struct policy_decision *out)
{
    unsigned gen = atomic_load(&eng.gen);
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
        return -1;
    }
    decide_with(r->cfg, s->ver, &s->sb, in, out);
    return 0;
}

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

/* Checks one file; prints its line. 0 good, 1 bad. */
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

    if (read_policy_file(path, path, &src, &len, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    int rc = 1;
    if (policy_version_of(src, len, hash)) {
        fprintf(stderr, "%s: cannot hash\n", path);
    } else if (compile_check(cfg, name, path, src, len, &msg)) {
        fprintf(stderr, "%s\n", msg.text);
    } else {
        printf("%s: ok (version %s)\n", path, hash);
        rc = 0;
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
    int n = scan_dir(t, &names, &err, report_bad_name, &bn);
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
    struct buf event, booking, settings;
    char *kind, *source, *old_title, *new_title, *series_id;
};

static void dry_run_free(struct dry_run *d)
{
    buf_free(&d->event);
    buf_free(&d->booking);
    buf_free(&d->settings);
    free(d->kind);
    free(d->source);
    free(d->old_title);
    free(d->new_title);
    free(d->series_id);
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
    if ((r = json_get_int(L, top, "now", &now_s, err)) < 0)
        goto done;
    if (r == 1)
        in->now_ms = now_s * 1000;
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
        if (get_dup(L, b, "booking", "title", &d->old_title, err))
            goto done;
        lua_pop(L, 1);
    }

    if ((r = json_get_obj(L, top, "change", err)) < 0)
        goto done;
    if (r == 1) {
        int c = lua_gettop(L);
        if (json_only_keys(L, c, change_keys, err) ||
            get_dup(L, c, "change", "kind", &d->kind, err) ||
            get_dup(L, c, "change", "source", &d->source, err))
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
            lua_pop(L, 1);
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

int policy_cmd_test(const struct config *cfg, const char *policy,
                    const char *change_file)
{
    struct cs_err err = {{0}};
    struct dry_run d;
    struct policy_version *v = NULL;
    struct sandbox *sb = NULL;
    struct policy_decision out;
    char path[4096], name[POLICY_NAME_MAX + 1], hash[13];
    char *src = NULL, *text = NULL;
    size_t len = 0, tlen = 0;
    int rc = 1;
    memset(&d, 0, sizeof d);
    buf_init(&d.event);
    buf_init(&d.booking);
    buf_init(&d.settings);

    size_t pl = strlen(policy);
    if (strchr(policy, '/') || (pl > 4 && strcmp(policy + pl - 4, ".lua") == 0)) {
        snprintf(path, sizeof path, "%s", policy);
    } else if (valid_name(policy, pl)) {
        snprintf(path, sizeof path, "%s/%s.lua", cfg->policies, policy);
    } else {
        fprintf(stderr, "calsync: policy test: '%s' is neither a file nor a policy "
                "name\n", policy);
        rc = 2;
        goto done;
    }
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t bl = strlen(base);
    snprintf(name, sizeof name, "%.*s", (int)(bl > 4 && strcmp(base + bl - 4, ".lua") == 0
                                               ? bl - 4 : bl), base);

    if (read_policy_file(path, path, &src, &len, &err)) {
        fprintf(stderr, "calsync: policy test: %s\n", err.msg);
        goto done;
    }
    if (policy_version_of(src, len, hash) ||
        !(v = version_new(name, path, src, len, hash))) {
        fprintf(stderr, "calsync: policy test: out of memory\n");
        goto done;
    }
    src = NULL;
    struct sandbox_msg msg = {{0}, {0}};
    if (compile_check(cfg, name, path, v->src, v->len, &msg)) {
        fprintf(stderr, "%s\n", msg.text);
        goto done;
    }

    if (read_file(change_file, &text, &tlen, &err)) {
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

    decide_with(cfg, v, &sb, &d.in, &out);
    struct buf o;
    buf_init(&o);
    buf_puts(&o, "{\"action\":");
    buf_json_strz(&o, out.action);
    buf_puts(&o, ",\"reason\":");
    buf_json_strz(&o, out.reason);
    buf_puts(&o, "}\n");
    rc = fwrite(o.data, 1, o.len, stdout) == o.len && fflush(stdout) == 0 ? 0 : 1;
    buf_free(&o);
done:
    sandbox_free(sb);
    version_unref(v);
    free(src);
    free(text);
    dry_run_free(&d);
    return rc;
}
