/* json.c -- JSON decoding through lua-cjson in a per-thread Lua state.
 *
 * Why a Lua state just to decode: DESIGN §1 makes lua-cjson the only JSON
 * codec, so there is exactly one parser to harden and fuzz. The state is
 * tiny (cjson only, no standard libraries) and lives as long as its thread;
 * pthread key destructors close it when libmicrohttpd or a worker exits.
 */
#include "json.h"

#include <lauxlib.h>
#include <lua-cjson.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

static pthread_key_t json_key;
static pthread_once_t json_once = PTHREAD_ONCE_INIT;
static char json_decode_ref; /* registry key of cjson.decode */
static char json_encode_ref;

static void json_close(void *p)
{
    if (p)
        lua_close((lua_State *)p);
}

static void json_key_init(void)
{
    pthread_key_create(&json_key, json_close);
}

static int json_setup(lua_State *L)
{
    luaL_requiref(L, "cjson", luaopen_cjson, 0);
    int m = lua_gettop(L);
    /* bound nesting; refuse NaN/Infinity, which are not JSON */
    lua_getfield(L, m, "decode_max_depth");
    lua_pushinteger(L, JSON_MAX_DEPTH);
    lua_call(L, 1, 0);
    lua_getfield(L, m, "decode_invalid_numbers");
    lua_pushboolean(L, 0);
    lua_call(L, 1, 0);
    lua_getfield(L, m, "encode_invalid_numbers");
    lua_pushboolean(L, 0);
    lua_call(L, 1, 0);
    lua_getfield(L, m, "decode");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &json_decode_ref);
    lua_getfield(L, m, "encode");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &json_encode_ref);
    return 0;
}

lua_State *json_state(void)
{
    pthread_once(&json_once, json_key_init);
    lua_State *L = pthread_getspecific(json_key);
    if (L)
        return L;
    L = luaL_newstate();
    if (!L)
        return NULL;
    lua_pushcfunction(L, json_setup);
    if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
        lua_close(L);
        return NULL;
    }
    pthread_setspecific(json_key, L);
    return L;
}

int json_decode(lua_State *L, const char *text, size_t len, struct cs_err *err)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &json_decode_ref);
    lua_pushlstring(L, text, len);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        const char *m = lua_tostring(L, -1);
        cs_err_set(err, "invalid JSON: %s", m ? m : "?");
        lua_pop(L, 1);
        return -1;
    }
    return 0;
}

int json_decode_object(lua_State *L, const char *text, size_t len,
                       struct cs_err *err)
{
    /* cjson decodes {} and [] to the same empty table: look at the text */
    size_t i = 0;
    while (i < len && (text[i] == ' ' || text[i] == '\t' || text[i] == '\n' ||
                       text[i] == '\r'))
        i++;
    if (i < len && text[i] != '{') {
        if (json_decode(L, text, len, err))
            return -1;
        lua_pop(L, 1);
        return cs_err_set(err, "body must be a JSON object");
    }
    if (json_decode(L, text, len, err))
        return -1;
    return 0;
}

static const char *json_type_name(lua_State *L, int idx)
{
    switch (lua_type(L, idx)) {
    case LUA_TSTRING: return "string";
    case LUA_TNUMBER: return "number";
    case LUA_TBOOLEAN: return "boolean";
    case LUA_TTABLE: return "object or array";
    default: return "null";
    }
}

/* Pushes obj[key]; returns 0 when absent/null (and pops it). */
static int field(lua_State *L, int obj, const char *key)
{
    lua_getfield(L, obj, key);
    if (lua_isnil(L, -1) || lua_islightuserdata(L, -1)) { /* cjson.null */
        lua_pop(L, 1);
        return 0;
    }
    return 1;
}

int json_get_str(lua_State *L, int obj, const char *key, const char **out,
                 size_t *len, struct cs_err *err)
{
    obj = lua_absindex(L, obj);
    if (!field(L, obj, key))
        return 0;
    if (lua_type(L, -1) != LUA_TSTRING) {
        cs_err_set(err, "'%s' must be a string, not %s", key, json_type_name(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    size_t n;
    *out = lua_tolstring(L, -1, &n);
    if (len)
        *len = n;
    /* the string stays anchored in the table; safe to pop the copy */
    lua_pop(L, 1);
    return 1;
}

int json_get_int(lua_State *L, int obj, const char *key, int64_t *out,
                 struct cs_err *err)
{
    obj = lua_absindex(L, obj);
    if (!field(L, obj, key))
        return 0;
    lua_Integer v;
    int ok = 0;
    if (lua_type(L, -1) == LUA_TNUMBER) {
        if (lua_isinteger(L, -1)) {
            v = lua_tointeger(L, -1);
            ok = 1;
        } else {
            lua_Number d = lua_tonumber(L, -1);
            ok = lua_numbertointeger(d, &v) && (lua_Number)v == d;
        }
    }
    if (!ok) {
        cs_err_set(err, "'%s' must be an integer, not %s", key,
                   lua_type(L, -1) == LUA_TNUMBER ? "a fraction" : json_type_name(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    *out = v;
    lua_pop(L, 1);
    return 1;
}

int json_get_bool(lua_State *L, int obj, const char *key, int *out,
                  struct cs_err *err)
{
    obj = lua_absindex(L, obj);
    if (!field(L, obj, key))
        return 0;
    if (lua_type(L, -1) != LUA_TBOOLEAN) {
        cs_err_set(err, "'%s' must be true or false, not %s", key, json_type_name(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    *out = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return 1;
}

int json_get_obj(lua_State *L, int obj, const char *key, struct cs_err *err)
{
    obj = lua_absindex(L, obj);
    if (!field(L, obj, key))
        return 0;
    if (!lua_istable(L, -1)) {
        cs_err_set(err, "'%s' must be an object, not %s", key, json_type_name(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    return 1;
}

int json_encode_value(lua_State *L, int idx, struct buf *out, struct cs_err *err)
{
    idx = lua_absindex(L, idx);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &json_encode_ref);
    lua_pushvalue(L, idx);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        cs_err_set(err, "cannot encode: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    int rc = buf_append(out, s, n);
    lua_pop(L, 1);
    return rc ? cs_err_set(err, "out of memory") : 0;
}

int json_only_keys(lua_State *L, int obj, const char *const *allowed,
                   struct cs_err *err)
{
    obj = lua_absindex(L, obj);
    lua_pushnil(L);
    while (lua_next(L, obj)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING) {
            lua_pop(L, 1);
            return cs_err_set(err, "unexpected non-string key");
        }
        const char *k = lua_tostring(L, -1);
        const char *const *a = allowed;
        while (*a && strcmp(*a, k) != 0)
            a++;
        if (!*a) {
            cs_err_set(err, "unknown field '%.64s'", k);
            lua_pop(L, 1);
            return -1;
        }
    }
    return 0;
}
