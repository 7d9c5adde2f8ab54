/* test_tz.c -- calsync.localtime's zone reader (src/policy/tz.c): the
 * daylight-saving transitions of four zones that cover the odd cases,
 * the POSIX footer past the file's last transition, agreement with glibc
 * over two centuries, hostile zone names and hostile files, threads. */
#include "unit.h"

#include "policy/tz.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static struct tz_local at(const char *zone, int64_t t)
{
    struct tz_local l;
    char err[200] = "";
    if (tz_localtime(zone, strlen(zone), t, &l, err, sizeof err))
        fail_msg("%s at %lld: %s", zone, (long long)t, err);
    return l;
}

/* wall clock "YYYY-MM-DD HH:MM:SS +offset" */
static void expect(const char *zone, int64_t t, const char *wall, int32_t off)
{
    struct tz_local l = at(zone, t);
    char got[64];
    snprintf(got, sizeof got, "%04lld-%02d-%02d %02d:%02d:%02d", (long long)l.year, l.month,
             l.day, l.hour, l.min, l.sec);
    if (strcmp(got, wall) != 0 || l.utc_offset != off)
        fail_msg("%s at %lld: got %s %+d, want %s %+d", zone, (long long)t, got,
                 (int)l.utc_offset, wall, (int)off);
}

static int64_t utc(int y, int mo, int d, int h, int mi)
{
    struct tm tm = {0};
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    return (int64_t)timegm(&tm);
}

static void test_transitions(void **state)
{
    (void)state;
    /* Berlin: 2026-03-29 02:00 CET -> 03:00 CEST (01:00 UTC) */
    expect("Europe/Berlin", utc(2026, 3, 29, 1, 0) - 1, "2026-03-29 01:59:59", 3600);
    expect("Europe/Berlin", utc(2026, 3, 29, 1, 0), "2026-03-29 03:00:00", 7200);
    /* back: 2026-10-25 03:00 CEST -> 02:00 CET (01:00 UTC) */
    expect("Europe/Berlin", utc(2026, 10, 25, 1, 0) - 1, "2026-10-25 02:59:59", 7200);
    expect("Europe/Berlin", utc(2026, 10, 25, 1, 0), "2026-10-25 02:00:00", 3600);
    /* New York: 2026-03-08 02:00 EST -> 03:00 EDT (07:00 UTC); back
     * 2026-11-01 02:00 EDT -> 01:00 EST (06:00 UTC) */
    expect("America/New_York", utc(2026, 3, 8, 7, 0) - 1, "2026-03-08 01:59:59", -18000);
    expect("America/New_York", utc(2026, 3, 8, 7, 0), "2026-03-08 03:00:00", -14400);
    expect("America/New_York", utc(2026, 11, 1, 6, 0) - 1, "2026-11-01 01:59:59", -14400);
    expect("America/New_York", utc(2026, 11, 1, 6, 0), "2026-11-01 01:00:00", -18000);
    /* Lord Howe, a 30-minute shift: 2026-04-05 02:00 +11 -> 01:30 +10:30
     * (15:00 UTC the day before); 2026-10-04 02:00 +10:30 -> 02:30 +11
     * (15:30 UTC the day before) */
    expect("Australia/Lord_Howe", utc(2026, 4, 4, 15, 0) - 1, "2026-04-05 01:59:59", 39600);
    expect("Australia/Lord_Howe", utc(2026, 4, 4, 15, 0), "2026-04-05 01:30:00", 37800);
    expect("Australia/Lord_Howe", utc(2026, 10, 3, 15, 30) - 1, "2026-10-04 01:59:59", 37800);
    expect("Australia/Lord_Howe", utc(2026, 10, 3, 15, 30), "2026-10-04 02:30:00", 39600);
    /* Kathmandu, +05:45 all year (+05:30 until 1986) */
    expect("Asia/Kathmandu", utc(2026, 1, 1, 0, 0), "2026-01-01 05:45:00", 20700);
    expect("Asia/Kathmandu", utc(2026, 7, 1, 0, 0), "2026-07-01 05:45:00", 20700);
    expect("Asia/Kathmandu", utc(1985, 7, 1, 0, 0), "1985-07-01 05:30:00", 19800);
    /* past the 2037 end of the transitions: the footer's rule
     * (Berlin 2040: last Sunday of March is the 25th) */
    expect("Europe/Berlin", utc(2040, 3, 25, 1, 0) - 1, "2040-03-25 01:59:59", 3600);
    expect("Europe/Berlin", utc(2040, 3, 25, 1, 0), "2040-03-25 03:00:00", 7200);
    expect("Australia/Lord_Howe", utc(2045, 1, 1, 0, 0), "2045-01-01 11:00:00", 39600);
    /* weekday 1 = Sunday, yday */
    struct tz_local l = at("Europe/Berlin", utc(2026, 3, 29, 12, 0));
    assert_int_equal(l.wday, 1);
    assert_int_equal(l.yday, 88);
    assert_int_equal(l.isdst, 1);
    l = at("America/New_York", utc(2027, 1, 1, 3, 0)); /* still 2026 there */
    assert_int_equal(l.year, 2026);
    assert_int_equal(l.yday, 365);
    assert_int_equal(l.wday, 5); /* Thursday 2026-12-31 */
}

/* Every zone agrees with glibc (single-threaded here, so TZ may be set)
 * every ~5 days over 1900-2100, and a second either side of each instant. */
static void test_agrees_with_glibc(void **state)
{
    (void)state;
    static const char *const zones[] = {"Europe/Berlin", "America/New_York",
        "Australia/Lord_Howe", "Asia/Kathmandu", "America/Sao_Paulo",
        "Pacific/Chatham", "Africa/Casablanca", "Europe/Dublin", "UTC", NULL};
    char *old = getenv("TZ") ? strdup(getenv("TZ")) : NULL;
    int checked = 0;
    for (int z = 0; zones[z]; z++) {
        setenv("TZ", zones[z], 1);
        tzset();
        for (int64_t t = utc(1900, 1, 1, 0, 0); t < utc(2100, 1, 1, 0, 0);
             t += 5 * 86400 + 3607) {
            time_t tt = (time_t)t;
            struct tm tm;
            assert_non_null(localtime_r(&tt, &tm));
            struct tz_local l = at(zones[z], t);
            if (l.year != tm.tm_year + 1900 || l.month != tm.tm_mon + 1 ||
                l.day != tm.tm_mday || l.hour != tm.tm_hour || l.min != tm.tm_min ||
                l.sec != tm.tm_sec || l.utc_offset != tm.tm_gmtoff ||
                l.wday != tm.tm_wday + 1 || l.yday != tm.tm_yday + 1)
                fail_msg("%s at %lld: %lld-%d-%d %d:%d:%d %+d, glibc %d-%d-%d %d:%d:%d %+ld",
                         zones[z], (long long)t, (long long)l.year, l.month, l.day, l.hour,
                         l.min, l.sec, (int)l.utc_offset, tm.tm_year + 1900, tm.tm_mon + 1,
                         tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, tm.tm_gmtoff);
            checked++;
        }
    }
    if (old)
        setenv("TZ", old, 1);
    else
        unsetenv("TZ");
    tzset();
    free(old);
    assert_true(checked > 100000);
}

static void expect_error(const char *zone, size_t len, const char *needle)
{
    struct tz_local l;
    char err[200] = "";
    assert_int_equal(tz_localtime(zone, len, 0, &l, err, sizeof err), -1);
    if (!strstr(err, needle))
        fail_msg("zone '%.*s': error '%s' lacks '%s'", (int)len, zone, err, needle);
}

static void test_hostile_names(void **state)
{
    (void)state;
    static const char *const bad[] = {"", "../../etc/passwd", "/etc/localtime",
        "Europe/../../etc/passwd", "Europe//Berlin", "Europe/Berlin/", ".",
        "Europe/.Berlin", "-Europe", "Europe/Berl in", "Europe\\Berlin", NULL};
    for (int i = 0; bad[i]; i++)
        expect_error(bad[i], strlen(bad[i]), "bad time zone name");
    char longname[200];
    memset(longname, 'A', sizeof longname);
    expect_error(longname, sizeof longname, "bad time zone name");
    expect_error("Europe/Berlin\0x", 15, "bad time zone name"); /* a NUL inside */
    expect_error("Mars/Olympus", 12, "unknown time zone");
    expect_error("Europe", 6, "unknown time zone"); /* a directory */
    struct tz_local l;
    char err[200];
    assert_int_equal(tz_localtime("UTC", 3, INT64_MAX, &l, err, sizeof err), -1);
    assert_int_equal(tz_localtime("UTC", 3, INT64_MIN, &l, err, sizeof err), -1);
}

static void write_bytes(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    fclose(f);
}

/* A database of damaged copies of a real file: every prefix and a flip of
 * every byte of the header and counts must give an error or a result,
 * never a crash (ASan build) or a read past the data. */
static void test_hostile_files(void **state)
{
    (void)state;
    FILE *f = fopen("/usr/share/zoneinfo/Europe/Berlin", "rb");
    assert_non_null(f);
    static unsigned char real[8192];
    size_t n = fread(real, 1, sizeof real, f);
    fclose(f);
    assert_true(n > 100);
    char dir[] = "/tmp/calsync-tz-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/Z", dir);
    tz_set_dir(dir);
    struct tz_local l;
    char err[200];
    for (size_t k = 0; k < n; k += k < 100 ? 1 : 37) {
        write_bytes(path, real, k);
        tz_set_dir(dir); /* empty the cache */
        (void)tz_localtime("Z", 1, 1795510800, &l, err, sizeof err);
    }
    static unsigned char copy[8192];
    for (size_t i = 0; i < 120 && i < n; i++) {
        for (int v = 0; v < 3; v++) {
            memcpy(copy, real, n);
            copy[i] = v == 0 ? 0xff : v == 1 ? 0x00 : (unsigned char)(copy[i] ^ 0x80);
            write_bytes(path, copy, n);
            tz_set_dir(dir);
            if (tz_localtime("Z", 1, 1795510800, &l, err, sizeof err) == 0)
                assert_true(l.month >= 1 && l.month <= 12 && l.hour >= 0 && l.hour < 24);
        }
    }
    /* not a regular file, too large, not TZif */
    unlink(path);
    assert_int_equal(mkfifo(path, 0600), 0);
    tz_set_dir(dir);
    assert_int_equal(tz_localtime("Z", 1, 0, &l, err, sizeof err), -1);
    unlink(path);
    static unsigned char big[TZ_FILE_MAX + 10];
    memcpy(big, real, n);
    write_bytes(path, big, sizeof big);
    tz_set_dir(dir);
    assert_int_equal(tz_localtime("Z", 1, 0, &l, err, sizeof err), -1);
    write_bytes(path, "hello\n", 6);
    tz_set_dir(dir);
    assert_int_equal(tz_localtime("Z", 1, 0, &l, err, sizeof err), -1);
    assert_non_null(strstr(err, "malformed"));
    unlink(path);
    rmdir(dir);
    tz_set_dir(NULL);
    expect("Europe/Berlin", utc(2026, 3, 29, 1, 0), "2026-03-29 03:00:00", 7200);
}

/* Many threads, more zones than the cache holds: every answer right. */
static const char *const many[] = {"Europe/Berlin", "America/New_York",
    "Australia/Lord_Howe", "Asia/Kathmandu", "Europe/Paris", "Europe/London",
    "Asia/Tokyo", "America/Chicago", "America/Denver", "America/Los_Angeles",
    "Europe/Madrid", "Europe/Rome", "Asia/Kolkata", "Asia/Shanghai", "UTC",
    "Africa/Cairo", "America/Sao_Paulo", "Australia/Sydney", "Pacific/Auckland",
    "Europe/Moscow", "Asia/Dubai", "Asia/Singapore", "America/Toronto",
    "Europe/Vienna", "Europe/Zurich", "Europe/Oslo", "Europe/Helsinki",
    "Europe/Athens", "Asia/Seoul", "Asia/Jakarta", "America/Mexico_City",
    "America/Bogota", "America/Lima", "Europe/Lisbon", "Atlantic/Reykjavik", NULL};

static void *hammer(void *p)
{
    (void)p;
    for (int r = 0; r < 200; r++)
        for (int i = 0; many[i]; i++) {
            struct tz_local l;
            char err[200];
            if (tz_localtime(many[i], strlen(many[i]), utc(2026, 3, 29, 1, 0), &l, err,
                             sizeof err))
                return (void *)1;
            if (strcmp(many[i], "Europe/Berlin") == 0 && (l.hour != 3 || l.utc_offset != 7200))
                return (void *)1;
            if (strcmp(many[i], "Asia/Kathmandu") == 0 && l.utc_offset != 20700)
                return (void *)1;
        }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, hammer, NULL), 0);
    for (int i = 0; i < 4; i++) {
        void *rc;
        pthread_join(th[i], &rc);
        assert_null(rc);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_transitions),
        cmocka_unit_test(test_agrees_with_glibc),
        cmocka_unit_test(test_hostile_names),
        cmocka_unit_test(test_hostile_files),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
