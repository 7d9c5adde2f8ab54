/* policy.h -- the Lua policy engine (DESIGN §5).
 *
 * This header is the boundary the rest of calsync uses. The engine keeps
 * one live version per policy file of the configured directory and
 * reloads on inotify, SIGHUP and POST /v1/policies/reload.
 */
#ifndef CALSYNC_POLICY_H
#define CALSYNC_POLICY_H

#include "config.h"
#include "util.h"

/* Loads every policy of cfg->policies and starts watching the directory.
 * A missing directory or a bad file is not fatal (it is reported in
 * GET /v1/policies and the log). Returns 0, or -1 with err set on a
 * resource failure. cfg must outlive the engine. */
int policy_engine_start(const struct config *cfg, struct cs_err *err);
void policy_engine_stop(void);

/* Re-reads the directory now. Returns the number of files that failed to
 * load (their previous versions stay live); when errors is not NULL a JSON
 * array of {"name","error"} is appended to it. -1 on a resource failure. */
int policy_reload(struct buf *errors);

/* Appends {"policies":[{"name","version","loaded_at","error"?}]}. 0 or -1. */
int policy_list_json(struct buf *out);

/* 1 when `name` has a live version. */
int policy_is_live(const char *name);

/* 1 when every policy file on record has a live version (for /healthz). */
int policy_all_live(void);

/* `calsync policy check [DIR|FILE]` and `calsync policy test POLICY
 * CHANGE.json`: return the process exit status (0, 1, or 2 for usage). */
int policy_cmd_check(const struct config *cfg, const char *target);
int policy_cmd_test(const struct config *cfg, const char *policy,
                    const char *change_file);

#endif
