/* util.c -- error slot, growable buffer, RFC 3339 time, random tokens,
 * backoff, timed waits.
 *
 * Time is kept as int64 milliseconds since the Unix epoch everywhere inside
 * calsync; text only exists at the edges (API, Google, audit). The civil
 * date arithmetic is Howard Hinnant's days_from_civil, which is exact for
 * the proleptic Gregorian calendar and needs no timezone database.
 */
#include "util.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int cs_err_set(struct cs_err *err, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* ---------------------------------------------------------------- buffer */

void buf_init(struct buf *b)
{
    b->data = NULL;
    b->len = b->cap = 0;
}

void buf_free(struct buf *b)
{
    free(b->data);
    buf_init(b);
}

void buf_reset(struct buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

int buf_reserve(struct buf *b, size_t extra)
{
    if (extra > SIZE_MAX / 2 - b->len - 1)
        return -1;
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p)
        return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

int buf_append(struct buf *b, const void *p, size_t n)
{
    if (buf_reserve(b, n) != 0)
        return -1;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int buf_puts(struct buf *b, const char *s)
{
    return buf_append(b, s, strlen(s));
}

int buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || buf_reserve(b, (size_t)n) != 0)
        return -1;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if invalid. */
static size_t utf8_seq_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; }
    else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; }
    else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; }
    else return 0;
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

int buf_json_str(struct buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    size_t mark = b->len;
    if (buf_reserve(b, n + 2) != 0 || buf_append(b, "\"", 1) != 0)
        return -1;
    size_t i = 0;
    while (i < n) {
        unsigned char c = p[i];
        size_t run = i;
        /* copy the longest run that needs no escaping in one go */
        while (run < n && p[run] >= 0x20 && p[run] < 0x80 && p[run] != '"' &&
               p[run] != '\\')
            run++;
        if (run > i) {
            if (buf_append(b, p + i, run - i) != 0)
                goto fail;
            i = run;
            continue;
        }
        int rc = 0;
        switch (c) {
        case '"': rc = buf_append(b, "\\\"", 2); i++; break;
        case '\\': rc = buf_append(b, "\\\\", 2); i++; break;
        case '\n': rc = buf_append(b, "\\n", 2); i++; break;
        case '\r': rc = buf_append(b, "\\r", 2); i++; break;
        case '\t': rc = buf_append(b, "\\t", 2); i++; break;
        default:
            if (c < 0x20) {
                char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
                rc = buf_append(b, e, 6);
                i++;
            } else {
                size_t l = utf8_seq_len(p + i, n - i);
                if (l == 0) {
                    rc = buf_append(b, "\xEF\xBF\xBD", 3);
                    i++;
                } else {
                    rc = buf_append(b, p + i, l);
                    i += l;
                }
            }
        }
        if (rc != 0)
            goto fail;
    }
    if (buf_append(b, "\"", 1) != 0)
        goto fail;
    return 0;
fail:
    b->len = mark;
    if (b->data)
        b->data[mark] = '\0';
    return -1;
}

int buf_json_strz(struct buf *b, const char *s)
{
    if (!s)
        return buf_append(b, "null", 4);
    return buf_json_str(b, s, strlen(s));
}

/* ------------------------------------------------------------------ time */

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const unsigned doe = (unsigned)(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static int is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static unsigned days_in_month(int64_t y, unsigned m)
{
    static const unsigned dim[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : dim[m - 1];
}

/* The instants an RFC 3339 text can hold: 0000-01-01T00:00:00Z up to
 * 9999-12-31T23:59:59.999Z. */
#define TIME_MIN_MS (-62167219200000LL)
#define TIME_MAX_MS (253402300800000LL - 1)

/* Reads exactly `w` digits at s[*i]. */
static int digits(const char *s, size_t n, size_t *i, int w, unsigned *out)
{
    unsigned v = 0;
    for (int k = 0; k < w; k++, (*i)++) {
        if (*i >= n || s[*i] < '0' || s[*i] > '9')
            return -1;
        v = v * 10 + (unsigned)(s[*i] - '0');
    }
    *out = v;
    return 0;
}

static int parse_date_part(const char *s, size_t n, size_t *i, int64_t *days)
{
    unsigned y, m, d;
    if (digits(s, n, i, 4, &y) || *i >= n || s[(*i)++] != '-' ||
        digits(s, n, i, 2, &m) || *i >= n || s[(*i)++] != '-' ||
        digits(s, n, i, 2, &d))
        return -1;
    if (m < 1 || m > 12 || d < 1 || d > days_in_month(y, m))
        return -1;
    *days = days_from_civil(y, m, d);
    return 0;
}

int time_parse_date(const char *s, size_t n, int64_t *ms_out)
{
    size_t i = 0;
    int64_t days;
    if (parse_date_part(s, n, &i, &days) || i != n)
        return -1;
    *ms_out = days * 86400000;
    return 0;
}

int time_parse_rfc3339(const char *s, size_t n, int64_t *ms_out)
{
    size_t i = 0;
    int64_t days;
    unsigned hh, mm, ss, ms = 0;
    if (!s || parse_date_part(s, n, &i, &days))
        return -1;
    if (i >= n || (s[i] != 'T' && s[i] != 't'))
        return -1;
    i++;
    if (digits(s, n, &i, 2, &hh) || i >= n || s[i++] != ':' ||
        digits(s, n, &i, 2, &mm) || i >= n || s[i++] != ':' ||
        digits(s, n, &i, 2, &ss))
        return -1;
    if (hh > 23 || mm > 59 || ss > 59)
        return -1;
    if (i < n && s[i] == '.') {
        i++;
        int nd = 0;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            if (nd < 3)
                ms = ms * 10 + (unsigned)(s[i] - '0');
            nd++;
            i++;
        }
        if (nd == 0 || nd > 9)
            return -1;
        for (; nd < 3; nd++)
            ms *= 10;
    }
    if (i >= n)
        return -1;
    int64_t offset_min = 0;
    if (s[i] == 'Z' || s[i] == 'z') {
        i++;
    } else if (s[i] == '+' || s[i] == '-') {
        int sign = s[i] == '-' ? -1 : 1;
        unsigned oh, om;
        i++;
        if (digits(s, n, &i, 2, &oh) || i >= n || s[i++] != ':' ||
            digits(s, n, &i, 2, &om) || oh > 23 || om > 59)
            return -1;
        offset_min = sign * (int64_t)(oh * 60 + om);
    } else {
        return -1;
    }
    if (i != n)
        return -1;
    int64_t secs = days * 86400 + hh * 3600 + mm * 60 + ss - offset_min * 60;
    /* an offset can push year 0000 or 9999 out of the range a time is
     * written back in: refuse what could not be returned as given */
    if (secs * 1000 + ms < TIME_MIN_MS || secs * 1000 + ms > TIME_MAX_MS)
        return -1;
    *ms_out = secs * 1000 + ms;
    return 0;
}

static void time_format(int64_t ms, int always_ms, char *out)
{
    /* out of range: the year-0 text below, without overflowing on the way
     * (INT64_MIN is SYNC_NO_TIME) */
    if (ms < TIME_MIN_MS || ms > TIME_MAX_MS)
        ms = TIME_MIN_MS;
    int64_t secs = ms >= 0 ? ms / 1000 : (ms - 999) / 1000;
    int frac = (int)(ms - secs * 1000);
    int64_t days = secs >= 0 ? secs / 86400 : (secs - 86399) / 86400;
    int64_t rem = secs - days * 86400;
    int64_t y;
    unsigned m, d;
    civil_from_days(days, &y, &m, &d);
    if (y < 0 || y > 9999) {
        y = 0;
        m = d = 1;
        rem = frac = 0;
    }
    unsigned v[6] = {(unsigned)y, m, d, (unsigned)(rem / 3600),
                     (unsigned)(rem / 60 % 60), (unsigned)(rem % 60)};
    static const char seps[] = "--T::";
    char *o = out;
    for (int i = 0; i < 6; i++) {
        if (i == 0) {
            *o++ = (char)('0' + v[0] / 1000);
            *o++ = (char)('0' + v[0] / 100 % 10);
        }
        *o++ = (char)('0' + v[i] / 10 % 10);
        *o++ = (char)('0' + v[i] % 10);
        if (i < 5)
            *o++ = seps[i];
    }
    if (frac || always_ms) {
        *o++ = '.';
        *o++ = (char)('0' + frac / 100);
        *o++ = (char)('0' + frac / 10 % 10);
        *o++ = (char)('0' + frac % 10);
    }
    *o++ = 'Z';
    *o = '\0';
}

void time_format_rfc3339(int64_t ms, char *out)
{
    time_format(ms, 0, out);
}

void time_format_rfc3339_ms(int64_t ms, char *out)
{
    time_format(ms, 1, out);
}

int64_t time_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t time_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------ randomness */

int random_hex(char *out, size_t nbytes)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char raw[64];
    if (nbytes > sizeof raw || RAND_bytes(raw, (int)nbytes) != 1)
        return -1;
    for (size_t i = 0; i < nbytes; i++) {
        out[2 * i] = hex[raw[i] >> 4];
        out[2 * i + 1] = hex[raw[i] & 15];
    }
    out[2 * nbytes] = '\0';
    return 0;
}

uint64_t random_u64(void)
{
    uint64_t v = 0;
    if (RAND_bytes((unsigned char *)&v, sizeof v) != 1)
        v = (uint64_t)time_mono_ms() * 0x9E3779B97F4A7C15ULL; /* Fibonacci hash */
    return v;
}

int secure_equal(const char *a, size_t an, const char *b, size_t bn)
{
    if (an != bn)
        return 0;
    return an == 0 || CRYPTO_memcmp(a, b, an) == 0;
}

int64_t backoff_ms(int attempt, int64_t base_ms, int64_t cap_ms)
{
    int64_t d = base_ms < cap_ms ? base_ms : cap_ms;
    /* doubling stops at the cap, so d never overflows */
    for (int i = 1; i < attempt && d < cap_ms; i++)
        d = d > cap_ms / 2 ? cap_ms : d * 2;
    if (d <= 0)
        return 0;
    int64_t lo = d - d / 2; /* ceil(d/2): never below half, also for odd d */
    return lo + (int64_t)(random_u64() % (uint64_t)(d - lo + 1));
}

/* ------------------------------------------------------------ timed waits */

int cond_init_monotonic(pthread_cond_t *cv)
{
    pthread_condattr_t ca;
    int rc = pthread_condattr_init(&ca);
    if (rc)
        return rc;
    rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (rc == 0)
        rc = pthread_cond_init(cv, &ca);
    pthread_condattr_destroy(&ca);
    return rc;
}

int cond_wait_ms(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t ms)
{
    if (ms <= 0)
        return ETIMEDOUT;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    int rc = pthread_cond_timedwait(cv, mu, &ts);
    return rc == ETIMEDOUT ? ETIMEDOUT : 0;
}

int parse_i64(const char *s, int64_t *out)
{
    if (!s || !*s)
        return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || (s[0] != '-' && (s[0] < '0' || s[0] > '9')))
        return -1;
    *out = v;
    return 0;
}

/* ------------------------------------------------------ hostile ids, URLs */

static int ascii_alnum(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

int id_valid_event(const char *s, size_t n)
{
    if (!s || n == 0 || n > ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!ascii_alnum(c) && c != '_' && c != '-')
            return 0;
    }
    return 1;
}

int id_valid_calendar(const char *s, size_t n)
{
    if (!s || n == 0 || n > ID_MAX)
        return 0;
    size_t dots = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '.')
            dots++;
        else if (!ascii_alnum(c) && (c == 0 || !strchr("_-+@#~=", c)))
            return 0; /* strchr would find the terminator for c == 0 */
    }
    /* "." and ".." are dot segments that a URL parser removes, taking the
     * path up to the calendar collection (or above it); any all-dots name
     * is refused so no normaliser anywhere can read one as such */
    return dots < n;
}

char *url_redact(const char *url, char *out, size_t cap)
{
    if (!cap)
        return out;
    const char *p = url ? strstr(url, "://") : NULL;
    size_t sl = p ? (size_t)(p - url) : 0;
    int scheme_ok = sl > 0;
    for (size_t i = 0; i < sl; i++) {
        unsigned char c = (unsigned char)url[i];
        if (!ascii_alnum(c) && c != '+' && c != '-' && c != '.')
            scheme_ok = 0;
    }
    if (!scheme_ok) {
        snprintf(out, cap, "(not a URL)");
        return out;
    }
    const char *auth = p + 3;
    size_t al = strcspn(auth, "/?#");
    /* the host is what follows the last '@' of the authority (a password
     * may hold '@' only percent-encoded, but be safe either way) */
    const char *host = auth;
    for (size_t i = 0; i < al; i++)
        if (auth[i] == '@')
            host = auth + i + 1;
    size_t hl = al - (size_t)(host - auth);
    /* control bytes and spaces are not part of a host: stop there */
    for (size_t i = 0; i < hl; i++)
        if ((unsigned char)host[i] <= ' ' || host[i] == 0x7f) {
            hl = i;
            break;
        }
    snprintf(out, cap, "%.*s://%.*s", (int)sl, url, (int)hl, host);
    return out;
}

int rate_limit_take(struct rate_limit *r, int64_t now_ms, long *suppressed)
{
    int ok = 0;
    pthread_mutex_lock(&r->mu);
    if (r->start_ms == INT64_MIN || now_ms - r->start_ms >= r->window_ms ||
        now_ms < r->start_ms) {
        r->start_ms = now_ms;
        r->used = 0;
    }
    if (r->used < r->max) {
        r->used++;
        if (suppressed)
            *suppressed = r->suppressed;
        r->suppressed = 0;
        ok = 1;
    } else {
        r->suppressed++;
    }
    pthread_mutex_unlock(&r->mu);
    return ok;
}
