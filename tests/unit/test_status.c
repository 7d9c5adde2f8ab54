/* test_status.c -- the status page's HTML escaping: every character that
 * can end a text node or an attribute becomes an entity, control bytes are
 * dropped, and everything else (UTF-8 included) passes unchanged. */
#include "unit.h"

#include "status.h"
#include "util.h"

#include <string.h>

static void check(const char *in, size_t n, const char *want)
{
    struct buf b;
    buf_init(&b);
    assert_int_equal(status_escape(&b, in, n), 0);
    assert_int_equal(b.len, strlen(want));
    assert_memory_equal(b.data ? b.data : "", want, b.len);
    buf_free(&b);
}

static void test_escape(void **state)
{
    (void)state;
    check("", 0, "");
    check("plain text 09:00", 16, "plain text 09:00");
    check("<script>alert(1)</script>", 25, "&lt;script&gt;alert(1)&lt;/script&gt;");
    check("a&b \"q\" 'x'", 11, "a&amp;b &quot;q&quot; &#39;x&#39;");
    check("&amp;", 5, "&amp;amp;");
    check("caf\xc3\xa9 \xe2\x9c\x93", 9, "caf\xc3\xa9 \xe2\x9c\x93");
    check("a\x01\x1b[31mb\x7f\tc\nd", 13, "a[31mb\tc\nd");
    check("nul\0<in>", 8, "nul&lt;in&gt;");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
