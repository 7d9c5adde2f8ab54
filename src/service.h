/* service.h -- `calsync serve`: start every subsystem, wait for signals,
 * stop them in reverse order. */
#ifndef CALSYNC_SERVICE_H
#define CALSYNC_SERVICE_H

#include "config.h"

/* Runs until SIGTERM/SIGINT. Returns the exit status (0 clean, 1 when a
 * subsystem could not start). */
int service_run(const struct config *cfg);

#endif
