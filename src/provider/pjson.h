/* pjson.h -- JSON reading the providers share: bounded string fields,
 * UTF-8-safe cuts, the page envelope (a listing's next page or new cursor
 * and its array of raw events) and the error text of an event that does
 * not parse. Pure: no network, no database. Only src/provider/ includes
 * this header. Values are read on a Lua state as json.h decodes them
 * (JSON null reads as absent).
 */
#ifndef CALSYNC_PROVIDER_PJSON_H
#define CALSYNC_PROVIDER_PJSON_H

#include "provider/provider.h"
#include "util.h"

#include <lua.h>
#include <stddef.h>

/* A bounded string field of the object at obj: 1 found (*out set), 0
 * absent or null (*out NULL), -1 another type, longer than max or holding
 * a NUL (err says which). *out points into L's value. */
int pjson_str_bounded(lua_State *L, int obj, const char *key, size_t max,
                      const char **out, struct cs_err *err);

/* s (n bytes) when n <= max; else its first max bytes or fewer, cut at a
 * UTF-8 character boundary, copied into dst (max + 1 bytes). */
const char *pjson_cut_utf8(const char *s, size_t n, char *dst, size_t max);

/* Where a provider's page keeps what the engine reads. */
struct pjson_page_keys {
    const char *next_page;   /* "nextPageToken", "@odata.nextLink" */
    const char *next_cursor; /* "nextSyncToken", "@odata.deltaLink" */
    const char *items;       /* "items", "value" */
};

/* Checks the page at idx (`listing`: exactly one of next_page /
 * next_cursor must be set, each at most PROVIDER_CURSOR_MAX bytes) and
 * fills out; items, when present, must be an array of at most
 * PROVIDER_PAGE_MAX values and stays pushed above the page (out->items is
 * its index; the caller's settop to below the page drops both). Items are
 * not parsed. 0, or -1 with err (nothing pushed). */
int pjson_page_read(lua_State *L, int idx, int listing, const struct pjson_page_keys *k,
                    struct provider_page *out, struct cs_err *err);

/* pjson_page_read of the page a call pushed on json_state()'s top:
 * PROVIDER_OK (page and items stay pushed), or PROVIDER_MALFORMED with
 * the page popped (nothing pushed on failure). */
int pjson_page_top(int listing, const struct pjson_page_keys *k, struct provider_page *out,
                   struct cs_err *err);

/* The start of every normalise: clears ev (every field of the shared shape
 * is set, never left from the item a scratch event held before), checks
 * that idx holds an object whose 'id' the provider can have issued
 * (valid_id; `who` names the provider in the error: an id that goes back
 * into URLs is skipped, never stored, and the rest of the page still
 * syncs). 0 with ev->id set, -1 with err, or PROVIDER_EVENT_SKIP (err says
 * why). idx must be absolute. */
int pjson_event_begin(lua_State *L, int idx, struct provider_event *ev,
                      int (*valid_id)(const char *s, size_t n), const char *who,
                      struct cs_err *err);

/* Prefixes err's message with the event's id ("event <id>: ...", "?" when
 * none was read): the error of a normalise that failed. Returns -1. */
int pjson_event_error(struct cs_err *err, const char *id);

#endif
