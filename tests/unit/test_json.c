/* test_json.c -- decoding through lua-cjson and the typed field getters
 * that the API uses to validate request bodies. */
#include "unit.h"

#include "json.h"

#include <lua.h>
#include <string.h>

static lua_State *L;

static int setup(void **state)
{
    (void)state;
    L = json_state();
    return L ? 0 : -1;
}

static void test_object_required(void **state)
{
    (void)state;
    struct cs_err err;
    const char *bad[] = {"[]", "[1,2]", "\"s\"", "12", "null", "true", "",
                         "{", "{\"a\":}", "{'a':1}", "{\"a\":1,}", "{\"a\":NaN}",
                         "{\"a\":Infinity}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int top = lua_gettop(L);
        if (json_decode_object(L, bad[i], strlen(bad[i]), &err) == 0)
            fail_msg("accepted %s", bad[i]);
        assert_int_equal(lua_gettop(L), top); /* nothing left on failure */
    }
    assert_int_equal(json_decode_object(L, " {} ", 4, &err), 0);
    lua_pop(L, 1);
}

static void test_depth_bounded(void **state)
{
    (void)state;
    struct cs_err err;
    char deep[2 * 200 + 16];
    size_t n = 0;
    deep[n++] = '{';
    memcpy(deep + n, "\"a\":", 4);
    n += 4;
    for (int i = 0; i < 150; i++)
        deep[n++] = '[';
    for (int i = 0; i < 150; i++)
        deep[n++] = ']';
    deep[n++] = '}';
    assert_int_equal(json_decode_object(L, deep, n, &err), -1);
    assert_non_null(strstr(err.msg, "invalid JSON"));
}

static void test_getters(void **state)
{
    (void)state;
    struct cs_err err;
    const char *doc = "{\"s\":\"x\",\"i\":5,\"f\":1.5,\"b\":true,\"n\":null,"
                      "\"o\":{\"k\":1},\"big\":1e300}";
    assert_int_equal(json_decode_object(L, doc, strlen(doc), &err), 0);
    const char *s;
    size_t len;
    int64_t i;
    int b;
    assert_int_equal(json_get_str(L, -1, "s", &s, &len, &err), 1);
    assert_string_equal(s, "x");
    assert_int_equal(json_get_str(L, -1, "i", &s, &len, &err), -1);
    assert_non_null(strstr(err.msg, "'i' must be a string"));
    assert_int_equal(json_get_str(L, -1, "missing", &s, &len, &err), 0);
    assert_int_equal(json_get_str(L, -1, "n", &s, &len, &err), 0); /* null = absent */
    assert_int_equal(json_get_int(L, -1, "i", &i, &err), 1);
    assert_int_equal(i, 5);
    assert_int_equal(json_get_int(L, -1, "f", &i, &err), -1);
    assert_int_equal(json_get_int(L, -1, "big", &i, &err), -1);
    assert_int_equal(json_get_int(L, -1, "s", &i, &err), -1);
    assert_int_equal(json_get_bool(L, -1, "b", &b, &err), 1);
    assert_true(b);
    assert_int_equal(json_get_bool(L, -1, "i", &b, &err), -1);
    assert_int_equal(json_get_obj(L, -1, "o", &err), 1);
    lua_pop(L, 1);
    assert_int_equal(json_get_obj(L, -1, "s", &err), -1);
    static const char *const allowed[] = {"s", "i", "f", "b", "n", "o", NULL};
    assert_int_equal(json_only_keys(L, -1, allowed, &err), -1);
    assert_non_null(strstr(err.msg, "unknown field 'big'"));
    lua_pop(L, 1);
}

static void test_encode_roundtrip(void **state)
{
    (void)state;
    struct cs_err err;
    struct buf out;
    buf_init(&out);
    const char *doc = "{\"tz\":\"Europe/Berlin\",\"hours\":[9,17]}";
    assert_int_equal(json_decode_object(L, doc, strlen(doc), &err), 0);
    assert_int_equal(json_encode_value(L, -1, &out, &err), 0);
    lua_pop(L, 1);
    assert_int_equal(json_decode_object(L, out.data, out.len, &err), 0);
    const char *tz;
    assert_int_equal(json_get_str(L, -1, "tz", &tz, NULL, &err), 1);
    assert_string_equal(tz, "Europe/Berlin");
    lua_pop(L, 1);
    buf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_object_required),
        cmocka_unit_test(test_depth_bounded),
        cmocka_unit_test(test_getters),
        cmocka_unit_test(test_encode_roundtrip),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
