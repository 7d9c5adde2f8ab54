/* tz.c -- IANA time zones from TZif files (RFC 8536), for
 * calsync.localtime.
 *
 * Why not localtime_r: it reads the zone from TZ, and setenv("TZ") in one
 * worker changes it for every thread (and is not thread-safe at all). So
 * the zoneinfo file is read here: opened without blocking, refused unless
 * a regular file of at most TZ_FILE_MAX bytes, every count and index
 * checked against the bytes actually there before it is used. A parsed
 * zone is immutable; the cache (TZ_CACHE_MAX zones) and every lookup run
 * under one mutex -- a lookup is a binary search, the rare miss one small
 * local file.
 *
 * Times after the last transition follow the file's footer, a POSIX TZ
 * string ("CET-1CEST,M3.5.0,M10.5.0/3"), as RFC 8536 §3.3 says.
 * Leap-second ("right/") zones are refused: calsync's times are POSIX.
 */
#include "policy/tz.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TZ_DEFAULT_DIR "/usr/share/zoneinfo"
#define TZ_TIMES_MAX 4096 /* transitions (fat files have under 2,000) */
#define TZ_TYPES_MAX 256  /* the type index is one byte */
#define TZ_CHARS_MAX 4096
#define TZ_OFF_MAX (26 * 3600) /* RFC 8536: -89999 .. 93599 seconds */
#define TZ_FOOTER_MAX 255
/* |t| handled: about 34,000 years either way, far from any overflow */
#define TZ_T_MAX (INT64_C(1) << 40)

struct tz_date {
    char kind;    /* 'J' (1..365, no Feb 29), 'n' (0..365), 'M' (m.w.d) */
    int a, b, c;  /* J/n: the day; M: month, week (1..5), weekday (0 = Sun) */
    int32_t time; /* seconds after local midnight (may be < 0 or > 24 h) */
};

struct tz_rule {
    int32_t std_off, dst_off; /* seconds east of UTC */
    int has_dst;
    struct tz_date start, end;
};

struct tz_zone {
    char name[TZ_NAME_MAX + 1];
    int ntimes, ntypes;
    int64_t *times;  /* ascending */
    uint8_t *idx;    /* type of each transition */
    int32_t off[TZ_TYPES_MAX];
    uint8_t dst[TZ_TYPES_MAX];
    int has_rule;
    struct tz_rule rule;
};

static struct {
    pthread_mutex_t mu;
    struct tz_zone *z[TZ_CACHE_MAX];
    int n, next;
    char dir[256];
} cache = {PTHREAD_MUTEX_INITIALIZER, {0}, 0, 0, TZ_DEFAULT_DIR};

/* ------------------------------------------------------------- calendar */

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* Howard Hinnant's days_from_civil / civil_from_days (proleptic Gregorian). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = floor_div(y, 400);
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    z += 719468;
    int64_t era = floor_div(z, 146097);
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static int is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int month_days(int64_t y, int m)
{
    static const int md[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return md[m - 1] + (m == 2 && is_leap(y));
}

/* 0 = Sunday */
static int weekday(int64_t days)
{
    return (int)(((days % 7) + 7 + 4) % 7);
}

/* ------------------------------------------------------ POSIX TZ footer */

/* A zone abbreviation: 3+ letters, or <...> of [A-Za-z0-9+-]. */
static int p_name(const char **s)
{
    const char *p = *s;
    size_t n = 0;
    if (*p == '<') {
        p++;
        while ((p[n] >= 'A' && p[n] <= 'Z') || (p[n] >= 'a' && p[n] <= 'z') ||
               (p[n] >= '0' && p[n] <= '9') || p[n] == '+' || p[n] == '-')
            n++;
        if (n < 3 || p[n] != '>')
            return -1;
        *s = p + n + 1;
        return 0;
    }
    while ((p[n] >= 'A' && p[n] <= 'Z') || (p[n] >= 'a' && p[n] <= 'z'))
        n++;
    if (n < 3)
        return -1;
    *s = p + n;
    return 0;
}

static int p_num(const char **s, int lo, int hi, int *out)
{
    const char *p = *s;
    int v = 0, k = 0;
    while (*p >= '0' && *p <= '9' && k < 4) {
        v = v * 10 + (*p++ - '0');
        k++;
    }
    if (k == 0 || v < lo || v > hi)
        return -1;
    *s = p;
    *out = v;
    return 0;
}

/* [+-]h[h[h]][:mm[:ss]] with hours at most maxh, in seconds. */
static int p_hms(const char **s, int maxh, int32_t *out)
{
    int sign = 1, h, m = 0, sec = 0;
    if (**s == '+' || **s == '-')
        sign = *(*s)++ == '-' ? -1 : 1;
    if (p_num(s, 0, maxh, &h))
        return -1;
    if (**s == ':') {
        (*s)++;
        if (p_num(s, 0, 59, &m))
            return -1;
        if (**s == ':') {
            (*s)++;
            if (p_num(s, 0, 59, &sec))
                return -1;
        }
    }
    *out = sign * (h * 3600 + m * 60 + sec);
    return 0;
}

static int p_date(const char **s, struct tz_date *d)
{
    d->time = 2 * 3600;
    if (**s == 'J') {
        (*s)++;
        d->kind = 'J';
        if (p_num(s, 1, 365, &d->a))
            return -1;
    } else if (**s == 'M') {
        (*s)++;
        d->kind = 'M';
        if (p_num(s, 1, 12, &d->a) || *(*s)++ != '.' || p_num(s, 1, 5, &d->b) ||
            *(*s)++ != '.' || p_num(s, 0, 6, &d->c))
            return -1;
    } else {
        d->kind = 'n';
        if (p_num(s, 0, 365, &d->a))
            return -1;
    }
    if (**s == '/') {
        (*s)++;
        if (p_hms(s, 167, &d->time)) /* RFC 8536 §3.3.1: -167 .. 167 hours */
            return -1;
    }
    return 0;
}

/* std offset [dst [offset] [,start[/time],end[/time]]]. POSIX offsets are
 * west of UTC; stored east. 0, or -1 when malformed. */
static int parse_rule(const char *s, struct tz_rule *r)
{
    int32_t w;
    memset(r, 0, sizeof *r);
    if (p_name(&s) || p_hms(&s, 24, &w))
        return -1;
    r->std_off = -w;
    if (!*s)
        return 0;
    if (p_name(&s))
        return -1;
    r->has_dst = 1;
    r->dst_off = r->std_off + 3600;
    if (*s && *s != ',') {
        if (p_hms(&s, 24, &w))
            return -1;
        r->dst_off = -w;
    }
    if (*s != ',') {
        /* no rule given: POSIX leaves it to the implementation; the US rule */
        if (*s)
            return -1;
        r->start = (struct tz_date){'M', 3, 2, 0, 7200};
        r->end = (struct tz_date){'M', 11, 1, 0, 7200};
        return 0;
    }
    s++;
    if (p_date(&s, &r->start) || *s++ != ',' || p_date(&s, &r->end) || *s)
        return -1;
    return 0;
}

/* Days since the epoch of the rule's date in year y (local). */
static int64_t rule_day(const struct tz_date *d, int64_t y)
{
    int64_t jan1 = days_from_civil(y, 1, 1);
    if (d->kind == 'J')
        return jan1 + d->a - 1 + (is_leap(y) && d->a >= 60);
    if (d->kind == 'n')
        return jan1 + d->a;
    int64_t first = days_from_civil(y, d->a, 1);
    int64_t day = first + (d->c - weekday(first) + 7) % 7 + (int64_t)(d->b - 1) * 7;
    while (day >= first + month_days(y, d->a))
        day -= 7; /* week 5: the last such weekday */
    return day;
}

/* The offset the footer gives at t. */
static void rule_at(const struct tz_rule *r, int64_t t, int32_t *off, int *isdst)
{
    *off = r->std_off;
    *isdst = 0;
    if (!r->has_dst)
        return;
    int64_t y;
    int m, d;
    civil_from_days(floor_div(t + r->std_off, 86400), &y, &m, &d);
    int64_t s = rule_day(&r->start, y) * 86400 + r->start.time - r->std_off;
    int64_t e = rule_day(&r->end, y) * 86400 + r->end.time - r->dst_off;
    int dst = s < e ? (t >= s && t < e) : !(t >= e && t < s);
    if (dst) {
        *off = r->dst_off;
        *isdst = 1;
    }
}

/* ------------------------------------------------------------- TZif file */

struct rd {
    const unsigned char *p;
    size_t n, off;
};

static int rd_need(const struct rd *r, size_t k)
{
    return r->off <= r->n && k <= r->n - r->off;
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t be64(const unsigned char *p)
{
    return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

/* The header at r: version and the six counts; checks the data block
 * that follows is there. Returns the block's size, or 0 when malformed. */
static size_t tzif_header(struct rd *r, int tsize, char *version, uint32_t c[6])
{
    if (!rd_need(r, 44) || memcmp(r->p + r->off, "TZif", 4) != 0)
        return 0;
    *version = (char)r->p[r->off + 4];
    for (int i = 0; i < 6; i++)
        c[i] = be32(r->p + r->off + 20 + 4 * i);
    r->off += 44;
    /* isutcnt isstdcnt leapcnt timecnt typecnt charcnt */
    if (c[4] < 1 || c[4] > TZ_TYPES_MAX || c[3] > TZ_TIMES_MAX || c[5] > TZ_CHARS_MAX ||
        c[2] > 1000 || (c[0] && c[0] != c[4]) || (c[1] && c[1] != c[4]))
        return 0;
    size_t size = (size_t)c[3] * (size_t)tsize + c[3] + (size_t)c[4] * 6 + c[5] +
                  (size_t)c[2] * (size_t)(tsize + 4) + c[1] + c[0];
    return rd_need(r, size) ? size : 0;
}

/* Parses a TZif file into z. 0, or -1 with err. */
static int tzif_parse(const unsigned char *data, size_t len, struct tz_zone *z,
                      char *err, size_t errlen)
{
    struct rd r = {data, len, 0};
    uint32_t c[6];
    char version;
    size_t size = tzif_header(&r, 4, &version, c);
    int tsize = 4;
    if (!size)
        goto bad;
    if (version >= '2') {
        /* the v1 block is for old readers: the 64-bit one follows */
        r.off += size;
        char v2;
        if (!(size = tzif_header(&r, 8, &v2, c)))
            goto bad;
        tsize = 8;
    }
    if (c[2]) {
        snprintf(err, errlen, "leap-second zones are not supported");
        return -1;
    }
    z->ntimes = (int)c[3];
    z->ntypes = (int)c[4];
    if (z->ntimes && (!(z->times = malloc((size_t)z->ntimes * sizeof *z->times)) ||
                      !(z->idx = malloc((size_t)z->ntimes)))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    const unsigned char *p = r.p + r.off;
    for (int i = 0; i < z->ntimes; i++, p += tsize) {
        z->times[i] = tsize == 8 ? be64(p) : (int64_t)(int32_t)be32(p);
        if (i && z->times[i] <= z->times[i - 1])
            goto bad;
    }
    for (int i = 0; i < z->ntimes; i++, p++) {
        if (*p >= z->ntypes)
            goto bad;
        z->idx[i] = *p;
    }
    for (int i = 0; i < z->ntypes; i++, p += 6) {
        int32_t off = (int32_t)be32(p);
        if (off <= -TZ_OFF_MAX || off >= TZ_OFF_MAX || p[4] > 1 || p[5] >= c[5])
            goto bad;
        z->off[i] = off;
        z->dst[i] = p[4];
    }
    r.off += size;
    if (tsize == 8) {
        /* footer: "\n" TZ string "\n" (may be empty) */
        if (!rd_need(&r, 1) || r.p[r.off] != '\n')
            goto bad;
        const unsigned char *f = r.p + r.off + 1;
        size_t room = r.n - r.off - 1;
        const unsigned char *nl = memchr(f, '\n', room);
        if (!nl || (size_t)(nl - f) > TZ_FOOTER_MAX)
            goto bad;
        char tz[TZ_FOOTER_MAX + 1];
        memcpy(tz, f, (size_t)(nl - f));
        tz[nl - f] = '\0';
        if (tz[0]) {
            if (parse_rule(tz, &z->rule))
                goto bad;
            z->has_rule = 1;
        }
    }
    return 0;
bad:
    snprintf(err, errlen, "malformed time-zone file");
    return -1;
}

static void zone_free(struct tz_zone *z)
{
    if (z) {
        free(z->times);
        free(z->idx);
        free(z);
    }
}

/* Components of [A-Za-z0-9_+-], none starting with '-', joined by '/':
 * no "..", no absolute path, nothing but the database. */
static int valid_zone(const char *s, size_t n)
{
    if (n == 0 || n > TZ_NAME_MAX)
        return 0;
    int start = 1;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '/') {
            if (start)
                return 0; /* empty component or leading '/' */
            start = 1;
            continue;
        }
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch >= '0' && ch <= '9') || ch == '_' || ch == '+' ||
              (ch == '-' && !start)))
            return 0;
        start = 0;
    }
    return !start;
}

/* Reads and parses the zone; the caller holds cache.mu. NULL with err. */
static struct tz_zone *zone_load(const char *name, char *err, size_t errlen)
{
    char path[sizeof cache.dir + TZ_NAME_MAX + 2];
    unsigned char *data = NULL;
    struct tz_zone *z = NULL;
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", cache.dir, name);
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            snprintf(err, errlen, "unknown time zone '%s'", name);
        else
            snprintf(err, errlen, "time zone '%s': %s", name, strerror(errno));
        goto done;
    }
    if (fstat(fd, &st) || !S_ISREG(st.st_mode) || st.st_size > TZ_FILE_MAX) {
        snprintf(err, errlen, "unknown time zone '%s'", name);
        goto done;
    }
    size_t n = 0, cap = (size_t)st.st_size;
    if (!(data = malloc(cap + 1))) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    for (;;) {
        /* one byte of room past the size: a file that grew is refused */
        ssize_t got = read(fd, data + n, cap + 1 - n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            snprintf(err, errlen, "time zone '%s': %s", name, strerror(errno));
            goto done;
        }
        if (got == 0)
            break;
        n += (size_t)got;
        if (n > cap) {
            snprintf(err, errlen, "time zone '%s': file changed while read", name);
            goto done;
        }
    }
    if (!(z = calloc(1, sizeof *z))) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    snprintf(z->name, sizeof z->name, "%s", name);
    if (tzif_parse(data, n, z, err, errlen)) {
        char m[128];
        snprintf(m, sizeof m, "%s", err);
        snprintf(err, errlen, "time zone '%s': %s", name, m);
        zone_free(z);
        z = NULL;
    }
done:
    if (fd >= 0)
        close(fd);
    free(data);
    return z;
}

/* The offset of z at t. */
static void zone_at(const struct tz_zone *z, int64_t t, int32_t *off, int *isdst)
{
    if (z->ntimes == 0 || t < z->times[0]) {
        if (z->ntimes == 0 && z->has_rule) {
            rule_at(&z->rule, t, off, isdst);
            return;
        }
        *off = z->off[0]; /* RFC 8536: type 0 before the first transition */
        *isdst = z->dst[0];
        return;
    }
    if (t >= z->times[z->ntimes - 1] && z->has_rule) {
        rule_at(&z->rule, t, off, isdst);
        return;
    }
    int lo = 0, hi = z->ntimes - 1; /* times[lo] <= t */
    while (lo < hi) {
        int mid = lo + (hi - lo + 1) / 2;
        if (z->times[mid] <= t)
            lo = mid;
        else
            hi = mid - 1;
    }
    *off = z->off[z->idx[lo]];
    *isdst = z->dst[z->idx[lo]];
}

int tz_localtime(const char *name, size_t len, int64_t t, struct tz_local *out,
                 char *err, size_t errlen)
{
    char zn[TZ_NAME_MAX + 1];
    if (!valid_zone(name, len)) {
        snprintf(err, errlen, "bad time zone name '%.*s' (an IANA name such as "
                 "\"Europe/Berlin\")", (int)(len > TZ_NAME_MAX ? TZ_NAME_MAX : len), name);
        return -1;
    }
    if (t > TZ_T_MAX || t < -TZ_T_MAX) {
        snprintf(err, errlen, "time out of range");
        return -1;
    }
    memcpy(zn, name, len);
    zn[len] = '\0';
    int32_t off;
    int isdst;
    pthread_mutex_lock(&cache.mu);
    struct tz_zone *z = NULL;
    for (int i = 0; i < cache.n && !z; i++)
        if (strcmp(cache.z[i]->name, zn) == 0)
            z = cache.z[i];
    if (!z) {
        if (!(z = zone_load(zn, err, errlen))) {
            pthread_mutex_unlock(&cache.mu);
            return -1;
        }
        if (cache.n < TZ_CACHE_MAX) {
            cache.z[cache.n++] = z;
        } else {
            zone_free(cache.z[cache.next]);
            cache.z[cache.next] = z;
            cache.next = (cache.next + 1) % TZ_CACHE_MAX;
        }
    }
    zone_at(z, t, &off, &isdst);
    pthread_mutex_unlock(&cache.mu);

    int64_t local = t + off;
    int64_t days = floor_div(local, 86400);
    int64_t rem = local - days * 86400;
    civil_from_days(days, &out->year, &out->month, &out->day);
    out->hour = (int)(rem / 3600);
    out->min = (int)(rem % 3600 / 60);
    out->sec = (int)(rem % 60);
    out->wday = weekday(days) + 1;
    out->yday = (int)(days - days_from_civil(out->year, 1, 1) + 1);
    out->utc_offset = off;
    out->isdst = isdst;
    return 0;
}

void tz_set_dir(const char *dir)
{
    pthread_mutex_lock(&cache.mu);
    for (int i = 0; i < cache.n; i++)
        zone_free(cache.z[i]);
    cache.n = cache.next = 0;
    snprintf(cache.dir, sizeof cache.dir, "%s", dir ? dir : TZ_DEFAULT_DIR);
    pthread_mutex_unlock(&cache.mu);
}
