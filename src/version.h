/* version.h -- the build's version string (git describe), generated into
 * build/gen/version.c by the Makefile. */
#ifndef CALSYNC_VERSION_H
#define CALSYNC_VERSION_H

extern const char calsync_version[];
#define CALSYNC_VERSION calsync_version

#endif
