/* api.h -- the admin API of DESIGN §4 (the /v1 routes, /healthz, /metrics).
 *
 * Handlers validate the whole request before touching the database and
 * apply each change in one transaction, so a rejected request changes
 * nothing and an accepted one is written with its audit entry at once.
 */
#ifndef CALSYNC_API_H
#define CALSYNC_API_H

#include "config.h"
#include "http.h"

/* The route table (NULL-method terminated). cfg must outlive the server. */
const struct http_route *api_routes(const struct config *cfg);

#endif
