/* main.c -- the calsync command line (DESIGN §3).
 *
 *   calsync serve [-c FILE]          run the service (migrates first)
 *   calsync migrate [-c FILE]        apply database migrations, exit
 *   calsync policy check [-c FILE] [DIR|FILE]
 *   calsync policy test [-c FILE] POLICY CHANGE.json
 *   calsync policy replay [-c FILE] CANDIDATE [--since WHEN] [--calendar ID] [--json]
 *   calsync version | help | -h
 *
 * Exit: 0 success, 1 failure (configuration errors included), 2 usage.
 */
#include "config.h"
#include "log.h"
#include "policy/policy.h"
#include "service.h"
#include "store/store.h"
#include "version.h"

#include <stdio.h>
#include <string.h>

struct cmd {
    const char *name;
    const char *usage;
    int min_args, max_args; /* positional arguments after the command */
};

static const struct cmd cmds[] = {
    {"serve", "calsync serve [-c FILE]\n  Runs the service in the foreground "
              "(logs to stderr). SIGTERM/SIGINT stop it, SIGHUP reloads policies.",
     0, 0},
    {"migrate", "calsync migrate [-c FILE]\n  Applies pending database "
                "migrations and exits.", 0, 0},
    {"policy check", "calsync policy check [-c FILE] [DIR or FILE]\n  Compiles "
                     "and validates policies (default: the configured "
                     "directory); exit 1 with file:line: message on error.",
     0, 1},
    {"policy test", "calsync policy test [-c FILE] [--expect ACTION] POLICY CHANGE.json\n"
                    "  Prints the decision POLICY makes for the change in CHANGE.json;\n"
                    "  exit 1 when the policy fails or the action is not ACTION.",
     2, 2},
    {"policy replay", "calsync policy replay [-c FILE] CANDIDATE [--since WHEN] "
                      "[--calendar ID] [--json]\n"
                      "  Re-decides the recorded decisions (all, or those at or after WHEN:\n"
                      "  RFC 3339 or a duration such as 7d, 12h) under CANDIDATE (a file or a\n"
                      "  policy name) from their recorded inputs, changing nothing; reports\n"
                      "  those whose action differs (a table, or JSON with --json).",
     1, 1},
    {"version", "calsync version\n  Prints the version.", 0, 0},
    {"help", "calsync help\n  Prints this help.", 0, 0},
};

static void usage_all(FILE *f)
{
    fprintf(f, "calsync %s -- bi-directional calendar sync engine\n\nusage:\n",
            CALSYNC_VERSION);
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        fprintf(f, "  %s\n", cmds[i].usage);
    fprintf(f, "\n-h or --help after any command prints its usage.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage_all(stderr);
        return 2;
    }
    const char *name = argv[1];
    int first = 2;
    char joined[32];
    if (strcmp(name, "-h") == 0 || strcmp(name, "--help") == 0 ||
        strcmp(name, "help") == 0) {
        usage_all(stdout);
        return 0;
    }
    if (strcmp(name, "--version") == 0)
        name = "version";
    if (strcmp(name, "policy") == 0) {
        if (argc < 3 || strcmp(argv[2], "-h") == 0 || strcmp(argv[2], "--help") == 0) {
            FILE *f = argc < 3 ? stderr : stdout;
            fprintf(f, "usage:\n  %s\n  %s\n  %s\n", cmds[2].usage, cmds[3].usage,
                    cmds[4].usage);
            return argc < 3 ? 2 : 0;
        }
        snprintf(joined, sizeof joined, "policy %s", argv[2]);
        name = joined;
        first = 3;
    }
    const struct cmd *cmd = NULL;
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (strcmp(cmds[i].name, name) == 0)
            cmd = &cmds[i];
    if (!cmd) {
        fprintf(stderr, "calsync: unknown command '%s'\n\n", name);
        usage_all(stderr);
        return 2;
    }

    const char *config_path = NULL;
    const char *expect = NULL; /* policy test --expect */
    const char *since = NULL, *calendar = NULL; /* policy replay */
    int json = 0;
    const char *pos[4];
    int npos = 0;
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            printf("usage: %s\n", cmd->usage);
            return 0;
        }
        if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "calsync: %s needs a FILE\nusage: %s\n", a, cmd->usage);
                return 2;
            }
            config_path = argv[++i];
            continue;
        }
        if (strcmp(a, "--expect") == 0 && strcmp(cmd->name, "policy test") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "calsync: %s needs an ACTION\nusage: %s\n", a, cmd->usage);
                return 2;
            }
            expect = argv[++i];
            continue;
        }
        if ((strcmp(a, "--since") == 0 || strcmp(a, "--calendar") == 0) &&
            strcmp(cmd->name, "policy replay") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "calsync: %s needs a value\nusage: %s\n", a, cmd->usage);
                return 2;
            }
            *(a[2] == 's' ? &since : &calendar) = argv[++i];
            continue;
        }
        if (strcmp(a, "--json") == 0 && strcmp(cmd->name, "policy replay") == 0) {
            json = 1;
            continue;
        }
        if (a[0] == '-' && a[1]) {
            fprintf(stderr, "calsync: unknown option '%s'\nusage: %s\n", a, cmd->usage);
            return 2;
        }
        if (npos == cmd->max_args) {
            fprintf(stderr, "calsync: unexpected argument '%s'\nusage: %s\n", a,
                    cmd->usage);
            return 2;
        }
        pos[npos++] = a;
    }
    if (npos < cmd->min_args) {
        fprintf(stderr, "calsync: missing arguments\nusage: %s\n", cmd->usage);
        return 2;
    }
    if (strcmp(cmd->name, "version") == 0) {
        printf("calsync %s\n", CALSYNC_VERSION);
        return 0;
    }
    if (strcmp(cmd->name, "help") == 0) {
        usage_all(stdout);
        return 0;
    }

    struct config cfg;
    struct cs_err err = {{0}};
    if (config_load(&cfg, config_path, &err)) {
        fprintf(stderr, "calsync: configuration: %s\n", err.msg);
        return 1;
    }
    log_set_level(cfg.log_level);
    log_set_json(strcmp(cfg.log_format, "json") == 0);
    int rc;
    if (strcmp(cmd->name, "serve") == 0) {
        rc = service_run(&cfg);
    } else if (strcmp(cmd->name, "migrate") == 0) {
        rc = 0;
        if (store_claim(cfg.database, &err) || store_init(cfg.database, &err)) {
            fprintf(stderr, "calsync: migrate: %s\n", err.msg);
            rc = 1;
        } else {
            struct store_conn *c = store_conn(&err);
            printf("database %s at schema version %d\n", cfg.database,
                   c ? store_disk_version(c) : -1);
        }
        store_shutdown();
    } else if (strcmp(cmd->name, "policy check") == 0) {
        rc = policy_cmd_check(&cfg, npos ? pos[0] : NULL);
    } else if (strcmp(cmd->name, "policy replay") == 0) {
        rc = policy_cmd_replay(&cfg, pos[0], since, calendar, json);
    } else {
        rc = policy_cmd_test(&cfg, pos[0], pos[1], expect);
    }
    config_free(&cfg);
    return rc;
}
