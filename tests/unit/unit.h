/* unit.h -- what every C unit test includes: cmocka and the runner shape.
 * One file per subsystem (tests/unit/test_<subsystem>.c), each its own
 * program; cmocka runs every test in the same process, so tests must not
 * depend on each other's state. */
#ifndef CALSYNC_UNIT_H
#define CALSYNC_UNIT_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#endif
