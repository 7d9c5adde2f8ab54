/* fuzz_http_match -- route matching of arbitrary paths against the real
 * route table (api_routes()).
 *
 * The scratch buffer is exactly strlen(path)+1 bytes, the size http.h
 * promises is enough, so an overrun is an ASan report. Properties of a
 * match: one capture per {name}; each capture non-empty and without '/';
 * putting the captures back into the pattern gives the path again.
 */
#include "api.h"
#include "config.h"
#include "fuzz.h"
#include "http.h"
#include "util.h"

#include <string.h>

static const struct http_route *routes;
static struct config cfg;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (config_defaults(&cfg))
        abort();
    routes = api_routes(&cfg);
    return 0;
}

static int braces(const char *p)
{
    int n = 0;
    for (; *p; p++)
        n += *p == '{';
    return n;
}

static void check_match(const char *pattern, const char *path,
                        const char **params, int nparams)
{
    FUZZ_CHECK(nparams == braces(pattern));
    struct buf b;
    buf_init(&b);
    int k = 0;
    for (const char *p = pattern; *p;) {
        if (*p == '{') {
            FUZZ_CHECK(k < nparams);
            FUZZ_CHECK(params[k][0] != '\0');
            FUZZ_CHECK(strchr(params[k], '/') == NULL);
            FUZZ_CHECK(buf_puts(&b, params[k]) == 0);
            k++;
            p = strchr(p, '}') + 1;
        } else {
            FUZZ_CHECK(buf_append(&b, p, 1) == 0);
            p++;
        }
    }
    FUZZ_CHECK(b.len == strlen(path) && memcmp(b.data, path, b.len) == 0);
    buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *path = malloc(size + 1);
    if (!path)
        return 0;
    memcpy(path, data, size);
    path[size] = '\0';
    size_t plen = strlen(path);
    char *scratch = malloc(plen + 1);
    if (!scratch) {
        free(path);
        return 0;
    }
    for (const struct http_route *r = routes; r->method; r++) {
        const char *params[HTTP_MAX_PARAMS];
        int nparams = -1;
        if (http_match(r->pattern, path, scratch, params, &nparams))
            check_match(r->pattern, path, params, nparams);
        else
            FUZZ_CHECK(nparams >= 0 && nparams <= HTTP_MAX_PARAMS);
    }
    free(scratch);
    free(path);
    return 0;
}
