/* tz.h -- IANA time zones from the system's database, for
 * calsync.localtime (DESIGN §5).
 *
 * Reads TZif files (RFC 8536) of the zoneinfo directory itself, with a
 * bounded, validated reader: no localtime_r/setenv("TZ"), which would
 * change the zone of the whole process under the other threads. A zone is
 * parsed once and kept immutable in a small cache (under a mutex), so
 * lookups from every worker thread are safe. Times past the file's last
 * transition follow its POSIX TZ footer (the rule of "slim" files).
 */
#ifndef CALSYNC_POLICY_TZ_H
#define CALSYNC_POLICY_TZ_H

#include <stddef.h>
#include <stdint.h>

/* Longest zone name accepted ("America/Argentina/ComodRivadavia" is 32). */
#define TZ_NAME_MAX 64
/* Largest TZif file read (the biggest shipped one is about 4 KiB). */
#define TZ_FILE_MAX (64 * 1024)
/* Zones kept parsed; past it the least recently added is dropped. */
#define TZ_CACHE_MAX 32

/* Wall-clock time of an instant in a zone. */
struct tz_local {
    int64_t year;
    int month, day, hour, min, sec;
    int wday;       /* 1 = Sunday .. 7 = Saturday, as os.date's */
    int yday;       /* 1 .. 366 */
    int32_t utc_offset; /* seconds east of UTC */
    int isdst;
};

/* The wall clock of epoch seconds t in the IANA zone name[0..len)
 * ("Europe/Berlin"). The name is checked before any file is opened:
 * components of [A-Za-z0-9_+-] (not starting with '-') joined by '/',
 * at most TZ_NAME_MAX bytes, so no path leaves the database. 0, or -1
 * with a message in err (unknown or bad zone, unreadable or malformed
 * file). Thread-safe. */
int tz_localtime(const char *name, size_t len, int64_t t, struct tz_local *out,
                 char *err, size_t errlen);

/* Tests: the database directory (NULL: /usr/share/zoneinfo); empties the
 * cache. Not concurrently with tz_localtime. */
void tz_set_dir(const char *dir);

#endif
