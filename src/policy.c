/* policy.c -- placeholder engine: knows which policy files exist.
 *
 * The sandboxed Lua engine replaces this file; until then a policy is
 * "live" when policies/<name>.lua exists and is readable, so the API can
 * refuse unknown policy names (422) as the contract says.
 */
#include "policy.h"

#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const struct config *policy_cfg;

int policy_engine_start(const struct config *cfg, struct cs_err *err)
{
    (void)err;
    policy_cfg = cfg;
    return 0;
}

void policy_engine_stop(void)
{
    policy_cfg = NULL;
}

int policy_reload(struct buf *errors)
{
    if (errors)
        buf_puts(errors, "[]");
    return 0;
}

int policy_list_json(struct buf *out)
{
    buf_puts(out, "{\"policies\":[");
    DIR *d = policy_cfg ? opendir(policy_cfg->policies) : NULL;
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l < 5 || strcmp(e->d_name + l - 4, ".lua") != 0)
            continue;
        buf_printf(out, "%s{\"name\":", n++ ? "," : "");
        buf_json_str(out, e->d_name, l - 4);
        buf_puts(out, ",\"version\":null,\"loaded_at\":null}");
    }
    if (d)
        closedir(d);
    return buf_puts(out, "]}");
}

int policy_is_live(const char *name)
{
    char path[4096];
    if (!policy_cfg || strchr(name, '/') || name[0] == '.')
        return 0;
    snprintf(path, sizeof path, "%s/%s.lua", policy_cfg->policies, name);
    return access(path, R_OK) == 0;
}

int policy_all_live(void)
{
    return 1;
}

int policy_cmd_check(const struct config *cfg, const char *target)
{
    (void)cfg;
    (void)target;
    fprintf(stderr, "calsync: policy check is not available in this build\n");
    return 1;
}

int policy_cmd_test(const struct config *cfg, const char *policy,
                    const char *change_file)
{
    (void)cfg;
    (void)policy;
    (void)change_file;
    fprintf(stderr, "calsync: policy test is not available in this build\n");
    return 1;
}
