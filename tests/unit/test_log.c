/* test_log.c -- the JSON-lines form of a log line (log_kv_to_json). */
#include "unit.h"

#include "log.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/* log_event in JSON mode, stderr captured: a tail that escapes to more
 * than the line buffer still gives one JSON object, marked as cut */
static void test_json_line_never_falls_back_to_text(void **state)
{
    (void)state;
    char path[] = "/tmp/calsync-log-XXXXXX", ctl[1800], got[8192];
    int fd = mkstemp(path), saved = dup(STDERR_FILENO);
    assert_true(fd >= 0 && saved >= 0);
    assert_int_equal(dup2(fd, STDERR_FILENO), STDERR_FILENO);
    memset(ctl, 1, sizeof ctl - 1);
    ctl[sizeof ctl - 1] = '\0';
    log_set_json(1);
    log_event(LOG_ERROR, "test.big", "k=%s", ctl);
    log_event(LOG_INFO, "test.small", "n=%d", 5);
    log_set_json(0);
    dup2(saved, STDERR_FILENO);
    close(saved);
    ssize_t n = pread(fd, got, sizeof got - 1, 0);
    close(fd);
    unlink(path);
    assert_true(n > 0);
    got[n] = '\0';
    const char *nl = strchr(got, '\n');
    assert_non_null(nl);
    assert_non_null(strstr(got, "\"level\":\"error\",\"event\":\"test.big\",\"truncated\":true}\n"));
    assert_int_equal(got[0], '{');
    assert_non_null(strstr(nl + 1, "\"event\":\"test.small\",\"n\":5}\n"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_types_and_quoting),
        cmocka_unit_test(test_too_small_a_buffer),
        cmocka_unit_test(test_json_line_never_falls_back_to_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
