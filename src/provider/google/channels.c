/* channels.c -- the Google provider's push channels: events.watch and
 * channels.stop. See google.h.
 */
#include "provider/google/google.h"

#include <string.h>

int google_events_watch(struct google_auth *a, const char *calendar_id,
                        const char *channel_id, const char *token,
                        const char *address, int64_t ttl_s,
                        struct google_resp *resp, struct cs_err *err)
{
    struct phttp_call c = {.what = "events.watch", .method = "POST", .push = 1};
    struct buf body;
    buf_init(&c.url);
    buf_init(&body);
    int bad = google_url_start(&c, calendar_id, "/events/watch");
    bad |= buf_puts(&body, "{\"id\":") || buf_json_strz(&body, channel_id) ||
           buf_puts(&body, ",\"type\":\"web_hook\",\"address\":") ||
           buf_json_strz(&body, address) || buf_puts(&body, ",\"token\":") ||
           buf_json_strz(&body, token) ||
           buf_printf(&body, ",\"params\":{\"ttl\":\"%lld\"}}", (long long)ttl_s);
    c.body = body.data;
    int rc = google_call_url(a, &c, bad, resp, err);
    buf_free(&body);
    return rc;
}

int google_channels_stop(struct google_auth *a, const char *channel_id,
                         const char *resource_id, struct google_resp *resp,
                         struct cs_err *err)
{
    struct phttp_call c = {.what = "channels.stop", .method = "POST"};
    struct buf body;
    buf_init(&c.url);
    buf_init(&body);
    int bad = buf_puts(&c.url, google_config()->google.api_base) ||
              buf_puts(&c.url, "/channels/stop");
    bad |= buf_puts(&body, "{\"id\":") || buf_json_strz(&body, channel_id) ||
           buf_puts(&body, ",\"resourceId\":") || buf_json_strz(&body, resource_id) ||
           buf_puts(&body, "}");
    c.body = body.data;
    int rc = google_call_url(a, &c, bad, resp, err);
    buf_free(&body);
    return rc;
}
