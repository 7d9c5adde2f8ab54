/* fuzz_config -- config_load_string on arbitrary bytes.
 *
 * The configuration is Lua run under the loader's own instruction and
 * memory caps. Properties: never a crash or leak; an error leaves a
 * message and a zeroed config; a success leaves every field inside the
 * bounds DESIGN §3 and config.c promise.
 */
#include "config.h"
#include "fuzz.h"

#include <string.h>

static int zeroed(const struct config *c)
{
    static const struct config zero;
    return memcmp(c, &zero, sizeof zero) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct config cfg;
    struct cs_err err = {{0}};
    int rc = config_load_string(&cfg, "fuzz.lua", (const char *)data, size, &err);
    if (rc != 0) {
        FUZZ_CHECK(rc == -1);
        FUZZ_CHECK(err.msg[0] != '\0');
        FUZZ_CHECK(memchr(err.msg, '\0', sizeof err.msg) != NULL);
        FUZZ_CHECK(zeroed(&cfg));
        return 0;
    }
    FUZZ_CHECK(cfg.listen && cfg.database && cfg.policies && cfg.public_url);
    FUZZ_CHECK(cfg.listen_port >= 0 && cfg.listen_port <= 65535);
    FUZZ_CHECK(cfg.listen_host[0] != '\0');
    FUZZ_CHECK(strlen(cfg.listen_host) < sizeof cfg.listen_host);
    FUZZ_CHECK(cfg.workers >= 1 && cfg.workers <= 256);
    FUZZ_CHECK(cfg.poll_interval >= 1);
    FUZZ_CHECK(cfg.google.channel_ttl >= 1 && cfg.google.renew_before >= 0);
    FUZZ_CHECK(cfg.policy_limits.instructions >= 1000);
    FUZZ_CHECK(cfg.policy_limits.memory >= 65536);
    FUZZ_CHECK(!cfg.api_token || cfg.api_token[0] != '\0');
    FUZZ_CHECK(cfg.n_webhooks >= 0 && cfg.n_webhooks <= 64);
    for (int i = 0; i < cfg.n_webhooks; i++) {
        FUZZ_CHECK(cfg.webhooks[i].url && cfg.webhooks[i].secret);
        FUZZ_CHECK(cfg.webhooks[i].secret[0] != '\0');
        FUZZ_CHECK(strncmp(cfg.webhooks[i].url, "http", 4) == 0);
    }
    config_free(&cfg);
    FUZZ_CHECK(zeroed(&cfg));
    return 0;
}
