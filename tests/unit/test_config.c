/* test_config.c -- the configuration loader: defaults, every key, and
 * errors that name the key and line. */
#include "unit.h"

#include "config.h"

#include <string.h>

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_all_keys),
        cmocka_unit_test(test_errors_name_key_and_line),
        cmocka_unit_test(test_lua_errors),
        cmocka_unit_test(test_memory_bound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
