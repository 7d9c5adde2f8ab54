/* test_log.c -- the JSON-lines form of a log line (log_kv_to_json). */
#include "unit.h"

#include "log.h"

#include <string.h>

static const char *conv(const char *line)
{
    static char out[1024];
    size_t n = log_kv_to_json(line, strlen(line), out, sizeof out);
    if (n == 0)
        return NULL;
    out[n] = '\0';
    return out;
}

static void test_types_and_quoting(void **state)
{
    (void)state;
    assert_string_equal(conv("ts=2026-12-04T10:00:00.000Z level=info event=sync.done "
                             "calendar=12 ms=3.5 neg=-4 err=- version=0a1b zero=0"),
                        "{\"ts\":\"2026-12-04T10:00:00.000Z\",\"level\":\"info\","
                        "\"event\":\"sync.done\",\"calendar\":12,\"ms\":3.5,\"neg\":-4,"
                        "\"err\":null,\"version\":\"0a1b\",\"zero\":0}");
    /* log_q's quoting undone, JSON's applied */
    assert_string_equal(conv("a=\"x y\" b=\"q\\\"uote\\\\back\\nline\" c=\"\""),
                        "{\"a\":\"x y\",\"b\":\"q\\\"uote\\\\back\\nline\",\"c\":\"\"}");
    /* leading zeros and long digit runs stay strings (ids, versions) */
    assert_string_equal(conv("a=007 b=1234567890123456 c=1."),
                        "{\"a\":\"007\",\"b\":\"1234567890123456\",\"c\":\"1.\"}");
    /* a word without '=' is kept, not dropped; controls are escaped */
    assert_string_equal(conv("event=x stray k=\x01"),
                        "{\"event\":\"x\",\"text\":\"stray\",\"k\":\"\\u0001\"}");
    /* an unterminated quote ends at the end of the line */
    assert_string_equal(conv("a=\"open"), "{\"a\":\"open\"}");
}

static void test_too_small_a_buffer(void **state)
{
    (void)state;
    char out[8];
    assert_int_equal(log_kv_to_json("event=abcdefgh", 14, out, sizeof out), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_types_and_quoting),
        cmocka_unit_test(test_too_small_a_buffer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
