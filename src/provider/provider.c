/* provider.c -- the provider registry and the wiring that registers the
 * built-in providers (Google, Microsoft Graph). See provider.h.
 *
 * The table is filled before any thread starts (the built-ins statically,
 * tests and future providers through provider_register) and only read
 * afterwards, so lookups take no lock.
 */
#include "provider/provider.h"

#include "provider/google/google.h"
#include "provider/microsoft/msgraph.h"
#include "store/credentials.h"

#include <stdio.h>
#include <string.h>

#define PROVIDER_MAX 8

static const struct provider_ops *providers[PROVIDER_MAX] = {&google_provider,
                                                              &microsoft_provider};
static int n_providers = 2;

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

const struct provider_ops *provider_at(int i)
{
    return i >= 0 && i < n_providers ? providers[i] : NULL;
}

int provider_metrics_declare(void)
{
    int rc = 0;
    for (int i = 0; i < n_providers; i++)
        if (providers[i]->metrics && metrics_declare(providers[i]->metrics,
                                                     providers[i]->n_metrics))
            rc = -1;
    return rc;
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
    char name[PROVIDER_NAME_MAX + 1] = "";
    *out = NULL;
    int r = credential_provider(c, credential_id, name, sizeof name, err);
    if (r < 0)
        return -1;
    if (r == 0)
        return cs_err_set(err, "no credential %lld", (long long)credential_id), 1;
    if (!(*out = provider_find(name))) {
        cs_err_set(err, "credential %lld: unknown provider \"%.32s\"",
                   (long long)credential_id, name);
        return 1;
    }
    return 0;
}

const struct provider_ops *provider_for_route(const char *path)
{
    static const char prefix[] = "/webhooks/";
    if (!path || strncmp(path, prefix, sizeof prefix - 1) != 0)
        return NULL;
    return provider_find(path + sizeof prefix - 1);
}

static _Thread_local enum provider_prio t_prio = PROVIDER_PRIO_LOW;

void provider_set_priority(enum provider_prio p)
{
    t_prio = p;
}

enum provider_prio provider_priority(void)
{
    return t_prio;
}
