/* fuzz_instance_id -- google_split_instance_id on arbitrary ids.
 *
 * Properties of a split: the series is a non-empty strict prefix ending
 * just before the last '_'; the suffix is the 8- or 16-byte form; the
 * instant formats back to the digits of the suffix (an all-day one is
 * midnight UTC). The id is passed without a NUL terminator.
 */
#include "fuzz.h"
#include "provider/google/google.h"
#include "util.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *id = (const char *)data;
    size_t series_len = (size_t)-1;
    int64_t ms = 0;
    int all_day = -1;
    if (!google_split_instance_id(id, size, &series_len, &ms, &all_day))
        return 0;
    FUZZ_CHECK(series_len > 0 && series_len < size);
    FUZZ_CHECK(id[series_len] == '_');
    FUZZ_CHECK(memchr(id + series_len + 1, '_', size - series_len - 1) == NULL);
    const char *sfx = id + series_len + 1;
    size_t sl = size - series_len - 1;
    char out[TIME_RFC3339_MAX];
    time_format_rfc3339(ms, out);
    /* out: YYYY-MM-DDTHH:MM:SSZ */
    char digits[16];
    memcpy(digits, out, 4);
    memcpy(digits + 4, out + 5, 2);
    memcpy(digits + 6, out + 8, 2);
    if (all_day == 1) {
        FUZZ_CHECK(sl == 8);
        FUZZ_CHECK(ms % 86400000 == 0);
        FUZZ_CHECK(memcmp(digits, sfx, 8) == 0);
    } else {
        FUZZ_CHECK(all_day == 0);
        FUZZ_CHECK(sl == 16 && sfx[8] == 'T' && sfx[15] == 'Z');
        FUZZ_CHECK(memcmp(digits, sfx, 8) == 0);
        memcpy(digits + 8, out + 11, 2);
        memcpy(digits + 10, out + 14, 2);
        memcpy(digits + 12, out + 17, 2);
        FUZZ_CHECK(memcmp(digits + 8, sfx + 9, 6) == 0);
    }
    return 0;
}
