/* test_config.c -- the configuration loader: defaults, every key, and
 * errors that name the key and line. */
#include "unit.h"

#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int load(struct config *cfg, const char *src, struct cs_err *err)
{
    return config_load_string(cfg, "conf.lua", src, strlen(src), err);
}

static void expect_error(const char *src, const char *needle)
{
    struct config cfg;
    struct cs_err err = {{0}};
    if (load(&cfg, src, &err) == 0) {
        config_free(&cfg);
        fail_msg("accepted: %s", src);
    }
    if (!strstr(err.msg, needle))
        fail_msg("error '%s' lacks '%s' (config: %s)", err.msg, needle, src);
}

static void test_defaults(void **state)
{
    (void)state;
    struct config cfg;
    struct cs_err err = {{0}};
    assert_int_equal(load(&cfg, "", &err), 0);
    assert_string_equal(cfg.listen, "127.0.0.1:8080");
    assert_string_equal(cfg.listen_host, "127.0.0.1");
    assert_int_equal(cfg.listen_port, 8080);
    assert_string_equal(cfg.database, "calsync.db");
    assert_string_equal(cfg.policies, "policies");
    assert_string_equal(cfg.public_url, "http://127.0.0.1:8080");
    assert_null(cfg.api_token);
    assert_int_equal(cfg.poll_interval, 600);
    assert_int_equal(cfg.workers, 4);
    assert_string_equal(cfg.google.api_base, "https://www.googleapis.com/calendar/v3");
    assert_string_equal(cfg.google.token_url, "https://oauth2.googleapis.com/token");
    assert_int_equal(cfg.google.channel_ttl, 604800);
    assert_int_equal(cfg.google.renew_before, 86400);
    assert_int_equal(cfg.n_webhooks, 0);
    assert_int_equal(cfg.policy_limits.instructions, 1000000);
    assert_int_equal(cfg.policy_limits.memory, 16 << 20);
    assert_int_equal(cfg.http.connections, 2048);
    assert_int_equal(cfg.http.connections_per_ip, 256);
    assert_int_equal(cfg.http.header_timeout, 10);
    config_free(&cfg);
}

static void test_all_keys(void **state)
{
    (void)state;
    const char *src =
        "listen = \"0.0.0.0:9000\"\n"
        "database = \"/tmp/x.db\"\n"
        "policies = \"/etc/calsync/policies\"\n"
        "public_url = \"https://sync.example.com\"\n"
        "api_token = \"s3cret\"\n"
        "poll_interval = 120\n"
        "workers = 8\n"
        "log_level = \"debug\"\n"
        "google = { client_id = \"id\", client_secret = \"sec\",\n"
        "  api_base = \"http://127.0.0.1:1/calendar/v3\", token_url = \"http://127.0.0.1:1/token\",\n"
        "  channel_ttl = 3600, renew_before = 600 }\n"
        "google.client_id = google.client_id .. \"2\"\n"
        "webhooks = { { url = \"http://a/h\", secret = \"k1\" }, { url = \"https://b/h\", secret = \"k2\" } }\n"
        "policy_limits = { instructions = 1e6, memory = 8 * 1024 * 1024 }\n"
        "http = { connections = 512, connections_per_ip = 0, header_timeout = 3 }\n";
    struct config cfg;
    struct cs_err err = {{0}};
    assert_int_equal(load(&cfg, src, &err), 0);
    assert_int_equal(cfg.listen_port, 9000);
    assert_string_equal(cfg.listen_host, "0.0.0.0");
    assert_string_equal(cfg.api_token, "s3cret");
    assert_int_equal(cfg.poll_interval, 120);
    assert_int_equal(cfg.workers, 8);
    assert_int_equal(cfg.log_level, LOG_DEBUG);
    assert_string_equal(cfg.google.client_id, "id2");
    assert_int_equal(cfg.google.channel_ttl, 3600);
    assert_int_equal(cfg.n_webhooks, 2);
    assert_string_equal(cfg.webhooks[1].url, "https://b/h");
    assert_string_equal(cfg.webhooks[1].secret, "k2");
    assert_int_equal(cfg.policy_limits.instructions, 1000000);
    assert_int_equal(cfg.policy_limits.memory, 8 << 20);
    assert_int_equal(cfg.http.connections, 512);
    assert_int_equal(cfg.http.connections_per_ip, 0);
    assert_int_equal(cfg.http.header_timeout, 3);
    config_free(&cfg);
}

static void test_errors_name_key_and_line(void **state)
{
    (void)state;
    expect_error("workers = 2\nlisten_port = 80\n", "conf.lua:2: unknown key 'listen_port'");
    expect_error("google = {\n client_secrte = \"x\" }\n", "unknown key 'google.client_secrte'");
    expect_error("google = { client_secrte = \"x\" }\n", "conf.lua:1:");
    expect_error("\n\nworkers = \"four\"\n", "conf.lua:3: must be an integer: 'workers'");
    expect_error("workers = 2.5\n", "must be an integer: 'workers'");
    expect_error("workers = 0\n", "out of range");
    expect_error("poll_interval = -1\n", "'poll_interval'");
    expect_error("listen = 8080\n", "must be a string: 'listen'");
    expect_error("listen = \"nohost\"\n", "'listen' must be \"host:port\"");
    expect_error("listen = \"127.0.0.1:99999\"\n", "'listen'");
    expect_error("google = \"x\"\n", "must be a table: 'google'");
    expect_error("google = { channel_ttl = \"1\" }\n", "'google.channel_ttl'");
    expect_error("policy_limits = { memory = true }\n", "'policy_limits.memory'");
    expect_error("policy_limits = { instrs = 5 }\n", "unknown key 'policy_limits.instrs'");
    expect_error("webhooks = { url = \"http://x\" }\n", "'webhooks'");
    expect_error("webhooks = { { url = \"http://x\" } }\n", "secret");
    expect_error("webhooks = { { url = \"ftp://x\", secret = \"s\" } }\n", "url");
    expect_error("webhooks = { { url = \"http://x\", secret = \"s\", sekret = 1 } }\n",
                 "unknown key 'webhooks[1].sekret'");
    expect_error("log_level = \"loud\"\n", "'log_level'");
    expect_error("public_url = \"ftp://x\"\n", "public_url");
    expect_error("api_token = \"\"\n", "api_token");
    expect_error("http = { header_timeout = 0 }\n", "'http.header_timeout'");
    expect_error("http = { connections = 1 }\n", "'http.connections'");
    expect_error("http = { conections = 10 }\n", "unknown key 'http.conections'");
}

static void test_lua_errors(void **state)
{
    (void)state;
    expect_error("workers = = 2\n", "conf.lua:1:");           /* syntax */
    expect_error("\nx = nil + 1\n", "conf.lua:2: attempt to perform arithmetic");
    expect_error("error('boom')\n", "global 'error'");          /* empty env */
    expect_error("x = os.getenv('HOME')\n", "conf.lua:1:");     /* empty env */
    expect_error("x = 1\n", "conf.lua:1: unknown key 'x'");
    expect_error("while true do end\n", "instruction limit");  /* bounded */
    expect_error("t = {} for i = 1, 1e9 do t[i] = string end\n", "conf.lua:1:");
    expect_error("\x1bLua", "binary");                          /* no bytecode */
}

static void test_memory_bound(void **state)
{
    (void)state;
    /* a config that tries to allocate without limit fails cleanly */
    expect_error("s = 'x' for i = 1, 40 do s = s .. s end\n", "conf.lua: configuration used more than 16 MiB");
}

/* env() and file(): values, defaults, and loud failures naming the line */
static void test_env_and_file(void **state)
{
    (void)state;
    struct config cfg;
    struct cs_err err = {{0}};
    char dir[] = "/tmp/calsync-unit-XXXXXX", path[64], src[512];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/secret", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("s3cret\r\n", f);
    fclose(f);
    setenv("CALSYNC_UNIT_TOKEN", "from-env", 1);
    snprintf(src, sizeof src,
             "api_token = env(\"CALSYNC_UNIT_TOKEN\")\n"
             "google = { client_secret = file(\"%s\"),"
             " client_id = env(\"CALSYNC_UNIT_UNSET\", \"dflt\") }\n"
             "log_format = \"json\"\n", path);
    assert_int_equal(load(&cfg, src, &err), 0);
    assert_string_equal(cfg.api_token, "from-env");
    assert_string_equal(cfg.google.client_secret, "s3cret");
    assert_string_equal(cfg.google.client_id, "dflt");
    assert_string_equal(cfg.log_format, "json");
    config_free(&cfg);
    /* relative to the configuration's directory */
    snprintf(path, sizeof path, "%s/conf.lua", dir);
    assert_int_equal(config_load_string(&cfg, path, "api_token = file('secret')", 26, &err), 0);
    assert_string_equal(cfg.api_token, "s3cret");
    config_free(&cfg);
    expect_error("\napi_token = env('CALSYNC_UNIT_UNSET')\n",
                 "conf.lua:2: env: CALSYNC_UNIT_UNSET is not set");
    expect_error("x = env('A B')", "env: needs a variable name");
    expect_error("x = env(1)", "env: needs a variable name");
    expect_error("x = env('CALSYNC_UNIT_UNSET', 3)", "must be a string");
    expect_error("api_token = file('/nonexistent/x')",
                 "conf.lua:1: file: cannot read /nonexistent/x: No such file");
    expect_error("api_token = file('/tmp')", "not a regular file");
    expect_error("log_format = 'xml'", "'log_format' must be \"text\" or \"json\"");
    /* env and file are functions, not keys: assigning them is an unknown key */
    expect_error("env = 1", "unknown key 'env'");
    unlink(path);
    snprintf(path, sizeof path, "%s/secret", dir);
    unlink(path);
    rmdir(dir);
    unsetenv("CALSYNC_UNIT_TOKEN");
}

/* relative database and policies land beside the configuration file */
static void test_resolve_paths(void **state)
{
    (void)state;
    struct config cfg;
    struct cs_err err = {{0}};
    assert_int_equal(load(&cfg, "database = 'a/b.db'\npolicies = '/abs/pol'", &err), 0);
    assert_int_equal(config_resolve_paths(&cfg, "/etc/calsync", &err), 0);
    assert_string_equal(cfg.database, "/etc/calsync/a/b.db");
    assert_string_equal(cfg.policies, "/abs/pol");
    config_free(&cfg);
    assert_int_equal(load(&cfg, "database = '/var/lib/x.db'", &err), 0);
    assert_int_equal(config_resolve_paths(&cfg, "/etc/calsync", &err), 0);
    assert_string_equal(cfg.database, "/var/lib/x.db");
    config_free(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_all_keys),
        cmocka_unit_test(test_errors_name_key_and_line),
        cmocka_unit_test(test_lua_errors),
        cmocka_unit_test(test_memory_bound),
        cmocka_unit_test(test_env_and_file),
        cmocka_unit_test(test_resolve_paths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
