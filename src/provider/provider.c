/* provider.c -- the provider registry and the wiring that registers the
 * built-in providers (Google). See provider.h.
 *
 * The table is filled before any thread starts (the built-ins statically,
 * tests and future providers through provider_register) and only read
 * afterwards, so lookups take no lock.
 */
#include "provider/provider.h"

#include "provider/google/google.h"

#include <stdio.h>
#include <string.h>

#define PROVIDER_MAX 8

static const struct provider_ops *providers[PROVIDER_MAX] = {&google_provider};
static int n_providers = 1;

const char *provider_rc_name(int rc)
{
    static const char *const names[] = {"ok", "transient", "resync", "revoked",
                                        "permanent", "gone", "conflict", "malformed"};
    return rc >= 0 && rc < (int)(sizeof names / sizeof names[0]) ? names[rc] : "?";
}

const struct provider_ops *provider_find(const char *name)
{
    for (int i = 0; name && i < n_providers; i++)
        if (strcmp(providers[i]->name, name) == 0)
            return providers[i];
    return NULL;
}

int provider_register(const struct provider_ops *ops)
{
    if (!ops || !ops->name || provider_find(ops->name) || n_providers >= PROVIDER_MAX)
        return -1;
    providers[n_providers++] = ops;
    return 0;
}

void provider_init_all(const struct config *cfg)
{
    for (int i = 0; i < n_providers; i++)
        if (providers[i]->init)
            providers[i]->init(cfg);
}

void provider_cancel_all(void)
{
    for (int i = 0; i < n_providers; i++)
        if (providers[i]->cancel)
            providers[i]->cancel();
}

void provider_thread_release_all(void)
{
    for (int i = 0; i < n_providers; i++)
        if (providers[i]->thread_release)
            providers[i]->thread_release();
}

int provider_for_credential(struct store_conn *c, int64_t credential_id,
                            const struct provider_ops **out, struct cs_err *err)
{
    static const char sql[] = "SELECT provider FROM credentials WHERE id = ?1";
    char name[PROVIDER_NAME_MAX + 1] = "";
    int rc = 1, found = 0;
    *out = NULL;
    sqlite3_stmt *st = store_stmt(c, sql, err);
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, credential_id);
    int s = sqlite3_step(st);
    if (s == SQLITE_ROW) {
        const char *p = store_col_text(st, 0);
        found = 1;
        snprintf(name, sizeof name, "%s", p ? p : "");
    } else if (s != SQLITE_DONE) {
        store_error(c, err);
        rc = -1;
        goto done;
    }
    if (!found) {
        cs_err_set(err, "no credential %lld", (long long)credential_id);
        goto done;
    }
    if (!(*out = provider_find(name))) {
        cs_err_set(err, "credential %lld: unknown provider \"%.32s\"",
                   (long long)credential_id, name);
        goto done;
    }
    rc = 0;
done:
    sqlite3_reset(st);
    return rc;
}

const struct provider_ops *provider_for_route(const char *path)
{
    static const char prefix[] = "/webhooks/";
    if (!path || strncmp(path, prefix, sizeof prefix - 1) != 0)
        return NULL;
    return provider_find(path + sizeof prefix - 1);
}
