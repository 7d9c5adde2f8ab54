/* fuzz_intake_headers -- POST /webhooks/google header handling, end to end.
 *
 * intake_handle reads its headers through libmicrohttpd (http_header), so
 * this target runs the real intake behind the real server (http_start on
 * a loopback port) over a real database (store_init on a temporary file
 * holding a live, an opening and a stopped channel), and sends one request
 * per input. Input: a flags byte (which of the four headers to send) then
 * X-Goog-Channel-ID, -Token, -Resource-State and -Message-Number values
 * separated by '\n'; CR, LF and NUL are dropped (they cannot be in a
 * header value; that is libmicrohttpd's parser, not ours).
 *
 * Properties: DESIGN §2 Intake. Unknown, empty or over-long channel id ->
 * 200, nothing scheduled. Stopped channel -> 200, nothing scheduled, stop
 * requested (at most once per INTAKE_STOP_INTERVAL_MS: later inputs on it
 * may request none). Live/opening channel with a wrong or missing token -> 401,
 * nothing scheduled. Right token -> 200, and exactly one sync requested
 * for its calendar unless the state is "sync". A 400 from the server's own
 * request parser must schedule nothing.
 */
#include "fuzz.h"
#include "http.h"
#include "intake.h"
#include "log.h"
#include "calendar.h"
#include "store/channels.h"
#include "store/store.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static struct config cfg;
static char dbpath[512];
static atomic_int n_sync, n_stop;
static atomic_llong last_cal;

static void on_sync(int64_t cal)
{
    atomic_fetch_add(&n_sync, 1);
    atomic_store(&last_cal, cal);
}

static void on_stop(const char *id)
{
    (void)id;
    atomic_fetch_add(&n_stop, 1);
}

static const struct http_route routes[] = {
    {"POST", "/webhooks/google", intake_handle, 0},
    {NULL, NULL, NULL, 0},
};

static const struct {
    const char *id, *token, *state;
    int64_t cal;
} channels[] = {
    {"ch-live", "tok-123", "live", 1},
    {"ch-open", "tok-open", "opening", 1},
    {"ch-old", "tok-old", "stopped", 1},
};
#define N_CHANNELS (sizeof channels / sizeof channels[0])

static void cleanup(void)
{
    http_stop();
    intake_stop();
    store_shutdown();
    char side[600];
    unlink(dbpath);
    for (int i = 0; i < 2; i++) {
        snprintf(side, sizeof side, "%s-intake.%d", dbpath, i);
        unlink(side);
    }
    snprintf(side, sizeof side, "%s-wal", dbpath);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", dbpath);
    unlink(side);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    struct cs_err err = {{0}};
    log_set_level(LOG_ERROR);
    /* FUZZ_TMPDIR: fuzz/run.sh points it into build/fuzz/tmp, which it
     * empties, so a crashed run leaves nothing behind in /tmp */
    const char *dir = getenv("FUZZ_TMPDIR");
    snprintf(dbpath, sizeof dbpath, "%s/calsync-fuzz-intake-%d.db",
             dir && *dir ? dir : "/tmp", (int)getpid());
    unlink(dbpath);
    if (config_defaults(&cfg) || store_init(dbpath, &err)) {
        fprintf(stderr, "setup: %s\n", err.msg);
        abort();
    }
    /* the fixture through the store's own functions: one credential, its
     * calendar (id 1, active) and the channels above */
    struct store_conn *c = store_conn(&err);
    int64_t cred = 0, cal = 0;
    int created = 0;
    if (!c || credential_insert(c, "google", "r", NULL, 0, &cred, &err) ||
        calendar_upsert(c, cred, "primary", "default", "{}", &cal, &created, &err) ||
        cal != 1 || calendar_set_state(c, cal, "active", NULL, 0, NULL, &err))
        abort();
    for (size_t i = 0; i < N_CHANNELS; i++)
        if (channels_insert_opening(c, channels[i].id, channels[i].cal, channels[i].token, 0,
                                    &err) ||
            channels_set_live(c, channels[i].id, "res", 9999999999999, &err) ||
            channels_set_state(c, channels[i].id, channels[i].state, &err))
            abort();
    struct intake_hooks hooks = {.sync = on_sync, .stop_channel = on_stop};
    intake_set_hooks(&hooks);
    if (intake_start(dbpath, &err)) {
        fprintf(stderr, "setup: %s\n", err.msg);
        abort();
    }
    free(cfg.listen);
    cfg.listen = strdup("127.0.0.1:0");
    cfg.listen_port = 0;
    if (http_start(&cfg, routes, &err)) {
        fprintf(stderr, "setup: %s\n", err.msg);
        abort();
    }
    atexit(cleanup);
    return 0;
}

/* The value as the server hands it over: leading OWS (SP, HT) dropped;
 * trailing OWS dropped too when `right` (RFC 9110 says so; libmicrohttpd
 * 0.9.75 keeps it, so both readings are accepted below). */
static void trim(const char **s, size_t *n, int right)
{
    while (*n && (**s == ' ' || **s == '\t'))
        (*s)++, (*n)--;
    while (right && *n && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t'))
        (*n)--;
}

struct outcome {
    int status, syncs, stops;
};

/* DESIGN §2 Intake, for the header values as the intake sees them. */
static struct outcome expect(unsigned flags, char val[4][4096],
                             const size_t vlen[4], int right)
{
    const char *id = val[0], *tok = val[1], *st = val[2];
    size_t il = vlen[0], tl = vlen[1], sl = vlen[2];
    trim(&id, &il, right);
    trim(&tok, &tl, right);
    trim(&st, &sl, right);
    int has_id = (flags & 1) && il > 0, has_tok = (flags & 2) != 0, has_st = (flags & 4) != 0;
    int ch = -1;
    for (size_t i = 0; has_id && i < N_CHANNELS; i++)
        if (strlen(channels[i].id) == il && memcmp(channels[i].id, id, il) == 0)
            ch = (int)i;
    if (ch < 0)
        return (struct outcome){200, 0, 0};
    if (strcmp(channels[ch].state, "stopped") == 0)
        return (struct outcome){200, 0, 1};
    int tok_ok = has_tok && strlen(channels[ch].token) == tl &&
                 memcmp(channels[ch].token, tok, tl) == 0;
    if (!tok_ok)
        return (struct outcome){401, 0, 0};
    int is_sync = has_st && sl == 4 && memcmp(st, "sync", 4) == 0;
    return (struct outcome){200, is_sync ? 0 : 1, 0};
}

static int send_request(const char *req, size_t len)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)http_port())};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int status = -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
        size_t off = 0;
        while (off < len) {
            ssize_t w = send(fd, req + off, len - off, MSG_NOSIGNAL);
            if (w <= 0)
                break;
            off += (size_t)w;
        }
        char resp[4096];
        size_t got = 0;
        ssize_t r;
        while (got < sizeof resp - 1 && (r = recv(fd, resp + got, sizeof resp - 1 - got, 0)) > 0)
            got += (size_t)r;
        resp[got] = '\0';
        if (got >= 12 && strncmp(resp, "HTTP/1.", 7) == 0)
            status = atoi(resp + 9);
    }
    close(fd);
    return status;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const names[4] = {"X-Goog-Channel-ID", "X-Goog-Channel-Token",
                                         "X-Goog-Resource-State", "X-Goog-Message-Number"};
    static char val[4][4096];
    if (size == 0 || size > 4096)
        return 0;
    unsigned flags = data[0];
    size_t vlen[4] = {0, 0, 0, 0};
    int f = 0;
    for (size_t i = 1; i < size; i++) {
        char ch = (char)data[i];
        if (ch == '\n') {
            if (++f == 4)
                break;
            continue;
        }
        if (ch == '\r' || ch == '\0')
            continue;
        val[f][vlen[f]++] = ch;
    }
    struct buf req;
    buf_init(&req);
    buf_puts(&req, "POST /webhooks/google HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   "Connection: close\r\nContent-Length: 0\r\n");
    for (int k = 0; k < 4; k++) {
        if (flags & (1u << k)) {
            buf_printf(&req, "%s: ", names[k]);
            buf_append(&req, val[k], vlen[k]);
            buf_puts(&req, "\r\n");
        }
    }
    buf_puts(&req, "\r\n");

    atomic_store(&n_sync, 0);
    atomic_store(&n_stop, 0);
    int status = send_request(req.data, req.len);
    buf_free(&req);
    /* the sync request follows the journalled notification's commit */
    FUZZ_CHECK(intake_flush(10000) == 0);
    if (status < 0)
        return 0; /* the server closed on us: nothing to judge */
    int syncs = atomic_load(&n_sync), stops = atomic_load(&n_stop);
    if (status == 400) { /* refused by the HTTP parser before the intake */
        FUZZ_CHECK(syncs == 0 && stops == 0);
        return 0;
    }
    struct outcome a = expect(flags, val, vlen, 0), b = expect(flags, val, vlen, 1);
    /* a stopped channel's stop is rate-limited: one per interval */
    int ok_a = status == a.status && syncs == a.syncs &&
               (stops == a.stops || (a.stops == 1 && stops == 0));
    int ok_b = status == b.status && syncs == b.syncs &&
               (stops == b.stops || (b.stops == 1 && stops == 0));
    if (!ok_a && !ok_b)
        fprintf(stderr, "got %d, %d syncs, %d stops; want %d/%d/%d or %d/%d/%d\n",
                status, syncs, stops, a.status, a.syncs, a.stops, b.status,
                b.syncs, b.stops);
    FUZZ_CHECK(ok_a || ok_b);
    if (syncs == 1)
        FUZZ_CHECK(atomic_load(&last_cal) == 1);
    return 0;
}
