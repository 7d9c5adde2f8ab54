/* bundle.h -- the Lua library compiled into the binary (lua/calsync/NAME.lua,
 * turned into C arrays by tools/bundle.c at build time). */
#ifndef CALSYNC_BUNDLE_H
#define CALSYNC_BUNDLE_H

#include <stddef.h>

struct bundle_file {
    const char *module;  /* "calsync", "calsync.sandbox", ... */
    const char *chunk;   /* chunk name for error messages: "@lua/calsync/x.lua" */
    const char *src;
    size_t len;
};

/* Terminated by an entry whose module is NULL. */
extern const struct bundle_file bundle_files[];

/* Looks a module up by name; NULL when absent. */
const struct bundle_file *bundle_find(const char *module);

#endif
