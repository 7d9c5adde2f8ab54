/* json.h -- reading JSON through lua-cjson, the one JSON decoder.
 *
 * Every thread that decodes gets its own lua_State holding cjson (created on
 * first use, closed when the thread exits). A document is decoded into a
 * Lua table on that state's stack; C then reads the fields it needs with the
 * typed getters below, which reject wrong types instead of coercing.
 *
 * Output JSON is written with buf_json_str()/buf_printf() (util.h): the
 * encoder side only ever sees values calsync produced itself.
 */
#ifndef CALSYNC_JSON_H
#define CALSYNC_JSON_H

#include "util.h"

#include <lua.h>
#include <stdint.h>

#define JSON_MAX_DEPTH 32

/* The calling thread's decoder state, created on first call. NULL on OOM.
 * Owned by the thread; do not close it. */
lua_State *json_state(void);

/* Decodes text into a value pushed on L. Returns 0, or -1 with err set
 * ("invalid JSON: ...") and nothing pushed. */
int json_decode(lua_State *L, const char *text, size_t len, struct cs_err *err);

/* Decodes and requires an object; 0 or -1 (err "body must be a JSON
 * object"). On success the table is at the top of L. */
int json_decode_object(lua_State *L, const char *text, size_t len,
                       struct cs_err *err);

/* Typed field getters on the object at index `obj`. Each returns
 *   1  the field is present with the right type (*out set),
 *   0  the field is absent or JSON null,
 *  -1  present with another type (err names the field and the type).
 * Strings point into the Lua state: valid until the value is popped. */
int json_get_str(lua_State *L, int obj, const char *key, const char **out,
                 size_t *len, struct cs_err *err);
int json_get_int(lua_State *L, int obj, const char *key, int64_t *out,
                 struct cs_err *err);
int json_get_bool(lua_State *L, int obj, const char *key, int *out,
                  struct cs_err *err);
/* Pushes the object field (table) on success (1); nothing otherwise. */
int json_get_obj(lua_State *L, int obj, const char *key, struct cs_err *err);

/* Re-encodes the value at idx with cjson.encode into out (appended).
 * 0 or -1. */
int json_encode_value(lua_State *L, int idx, struct buf *out, struct cs_err *err);

/* Fails (-1, err names the first) if obj holds a key not in the
 * NULL-terminated list `allowed`. */
int json_only_keys(lua_State *L, int obj, const char *const *allowed,
                   struct cs_err *err);

#endif
