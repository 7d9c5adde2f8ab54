/* bundle.c -- lookup in the generated table of bundled Lua modules. */
#include "bundle.h"

#include <string.h>

const struct bundle_file *bundle_find(const char *module)
{
    for (const struct bundle_file *f = bundle_files; f->module; f++)
        if (strcmp(f->module, module) == 0)
            return f;
    return NULL;
}
