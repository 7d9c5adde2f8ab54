/* fuzz_rfc3339 -- time_parse_rfc3339 / time_parse_date / time_format_rfc3339.
 *
 * Properties:
 *  - a parsed instant formats to a string that parses back to the same
 *    instant (the API stores what it parsed and returns what it formats);
 *  - a parsed date is midnight UTC and formats back to the same date;
 *  - time_format_rfc3339 on any int64 (input read as 8 bytes) stays inside
 *    TIME_RFC3339_MAX and is itself parseable.
 * The input is passed with its exact length and no NUL terminator, so a
 * read past the end is caught by ASan.
 */
#include "fuzz.h"
#include "util.h"

#include <string.h>

static void roundtrip(int64_t ms)
{
    char out[TIME_RFC3339_MAX + 8];
    memset(out, 'X', sizeof out);
    time_format_rfc3339(ms, out);
    size_t n = strnlen(out, sizeof out);
    FUZZ_CHECK(n < TIME_RFC3339_MAX);
    int64_t back;
    FUZZ_CHECK(time_parse_rfc3339(out, n, &back) == 0);
    (void)back;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    int64_t ms;
    if (time_parse_rfc3339(s, size, &ms) == 0) {
        char out[TIME_RFC3339_MAX];
        time_format_rfc3339(ms, out);
        int64_t back;
        FUZZ_CHECK(time_parse_rfc3339(out, strlen(out), &back) == 0);
        FUZZ_CHECK(back == ms);
    }
    if (time_parse_date(s, size, &ms) == 0) {
        FUZZ_CHECK(size == 10);
        FUZZ_CHECK(ms % 86400000 == 0);
        char out[TIME_RFC3339_MAX];
        time_format_rfc3339(ms, out);
        FUZZ_CHECK(memcmp(out, s, 10) == 0);
        FUZZ_CHECK(strcmp(out + 10, "T00:00:00Z") == 0);
    }
    if (size >= 8) {
        int64_t v;
        memcpy(&v, data, sizeof v);
        roundtrip(v);
    }
    return 0;
}
