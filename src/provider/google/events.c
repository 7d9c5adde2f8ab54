/* events.c -- the Google provider's Calendar calls on events: list,
 * instances, get, insert, patch, delete. Each builds its URL (refusing an
 * id Google cannot have issued) and runs through google_call_url. See
 * google.h.
 */
#include "provider/google/google.h"

#include <string.h>

int google_events_list(struct google_auth *a, const char *calendar_id,
                       const struct google_list_params *p,
                       struct google_resp *resp, struct cs_err *err)
{
    struct phttp_call c = {.what = "events.list", .method = "GET", .push = 1};
    buf_init(&c.url);
    int bad = google_url_start(&c, calendar_id, "/events?singleEvents=true&maxResults=2500");
    if (p->sync_token) {
        bad |= buf_puts(&c.url, "&syncToken=") || google_url_escape(&c.url, p->sync_token);
    } else {
        if (p->show_deleted)
            bad |= buf_puts(&c.url, "&showDeleted=true");
        if (p->private_prop)
            bad |= buf_puts(&c.url, "&privateExtendedProperty=") ||
                   google_url_escape(&c.url, p->private_prop);
    }
    if (p->page_token)
        bad |= buf_puts(&c.url, "&pageToken=") || google_url_escape(&c.url, p->page_token);
    return google_call_url(a, &c, bad, resp, err);
}

static int event_url(struct phttp_call *c, const char *cal, const char *ev)
{
    if (!ev || !id_valid_event(ev, strlen(ev))) {
        c->invalid = "event id";
        return 0;
    }
    return google_url_start(c, cal, "/events/") ||
           (!c->invalid && google_url_escape(&c->url, ev));
}

int google_events_instances(struct google_auth *a, const char *calendar_id,
                            const char *series_id, const char *page_token,
                            struct google_resp *resp, struct cs_err *err)
{
    struct phttp_call c = {.what = "events.instances", .method = "GET", .push = 1};
    buf_init(&c.url);
    int bad = event_url(&c, calendar_id, series_id) ||
              buf_puts(&c.url, "/instances?showDeleted=true&maxResults=2500");
    if (page_token)
        bad |= buf_puts(&c.url, "&pageToken=") || google_url_escape(&c.url, page_token);
    return google_call_url(a, &c, bad, resp, err);
}

int google_events_get(struct google_auth *a, const char *calendar_id,
                      const char *event_id, struct google_resp *resp,
                      struct cs_err *err)
{
    struct phttp_call c = {.what = "events.get", .method = "GET", .push = 1};
    buf_init(&c.url);
    return google_call_url(a, &c, event_url(&c, calendar_id, event_id), resp, err);
}

int google_events_insert(struct google_auth *a, const char *calendar_id,
                         const char *body_json, struct google_resp *resp,
                         struct cs_err *err)
{
    return google_events_insert_v(a, calendar_id, body_json, 0, resp, err);
}

int google_events_insert_v(struct google_auth *a, const char *calendar_id,
                           const char *body_json, int version,
                           struct google_resp *resp, struct cs_err *err)
{
    struct phttp_call c = {.what = "events.insert", .method = "POST", .push = 1,
                     .body = body_json};
    buf_init(&c.url);
    return google_call_url(a, &c,
                           google_url_start(&c, calendar_id,
                                            version ? "/events?conferenceDataVersion=1"
                                                    : "/events"),
                           resp, err);
}

int google_events_patch(struct google_auth *a, const char *calendar_id,
                        const char *event_id, const char *body_json,
                        const char *if_match, struct google_resp *resp,
                        struct cs_err *err)
{
    struct phttp_call c = {.what = "events.patch", .method = "PATCH", .push = 1,
                     .body = body_json, .if_match = if_match};
    buf_init(&c.url);
    return google_call_url(a, &c, event_url(&c, calendar_id, event_id), resp, err);
}

int google_events_delete(struct google_auth *a, const char *calendar_id,
                         const char *event_id, const char *if_match,
                         struct google_resp *resp, struct cs_err *err)
{
    struct phttp_call c = {.what = "events.delete", .method = "DELETE",
                     .if_match = if_match};
    buf_init(&c.url);
    return google_call_url(a, &c, event_url(&c, calendar_id, event_id), resp, err);
}
