/* health.h -- what GET /healthz answers, and why.
 *
 * Unhealthy (503) when the database is not usable, when a policy file has
 * no live version, or when no policy is loaded at all (nothing could be
 * decided; a calendar could not even be added). Each cause is one entry of
 * `reasons`. Things that do not stop the service but keep it from doing
 * its job -- no Google OAuth client configured, a public_url Google cannot
 * push to -- are `warnings`: the answer stays 200 and the start logs them.
 */
#ifndef CALSYNC_HEALTH_H
#define CALSYNC_HEALTH_H

#include "config.h"
#include "util.h"

/* Remembers the configuration (not copied: it outlives the service). */
void health_init(const struct config *cfg);

/* Appends the /healthz body to out:
 *   {"status":"ok"|"unhealthy","database":B,"policies":B,
 *    "reasons":[...],"warnings":[...]}
 * Returns the HTTP status, 200 or 503. */
int health_render(struct buf *out);

/* Logs one warn line per configuration warning (at start). Returns how
 * many. */
int health_log_warnings(void);

#endif
