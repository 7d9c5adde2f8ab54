/* booking.c -- the JSON views of a booking (the rows: store/bookings.c). */
#include "booking.h"

#include <stdio.h>
#include <string.h>

static void put_time(struct buf *out, const char *key, int64_t ms)
{
    char ts[TIME_RFC3339_MAX];
    time_format_rfc3339(ms, ts);
    buf_printf(out, ",\"%s\":\"%s\"", key, ts);
}

void booking_json(const struct booking *b, struct buf *out)
{
    buf_puts(out, "{\"uid\":");
    buf_json_strz(out, b->uid);
    buf_printf(out, ",\"calendar_id\":%lld,\"title\":", (long long)b->calendar_id);
    buf_json_strz(out, b->title);
    put_time(out, "start", b->start_ms);
    put_time(out, "end", b->end_ms);
    buf_puts(out, ",\"status\":");
    buf_json_strz(out, b->status);
    buf_printf(out, ",\"needs_review\":%s,\"event_id\":",
               b->needs_review ? "true" : "false");
    buf_json_strz(out, b->event_id);
    if (b->has_original)
        put_time(out, "original_start", b->original_start_ms);
    if (b->cancelled_by) {
        buf_puts(out, ",\"cancelled_by\":");
        buf_json_strz(out, b->cancelled_by);
    }
    if (b->cancel_reason) {
        buf_puts(out, ",\"cancel_reason\":");
        buf_json_strz(out, b->cancel_reason);
    }
    buf_puts(out, ",\"write_state\":");
    buf_json_strz(out, b->write_state);
    if (b->write_error) {
        buf_puts(out, ",\"write_error\":");
        buf_json_strz(out, b->write_error);
    }
    put_time(out, "updated_at", b->updated_ms);
    const char *opt[] = {b->description, b->location, b->time_zone};
    static const char *const keys[] = {"description", "location", "time_zone"};
    for (int i = 0; i < 3; i++)
        if (opt[i]) {
            buf_printf(out, ",\"%s\":", keys[i]);
            buf_json_strz(out, opt[i]);
        }
    if (b->attendees)
        buf_printf(out, ",\"attendees\":%s", b->attendees); /* stored as encoded JSON */
    if (b->needs_review && b->proposed_kind[0]) {
        buf_puts(out, ",\"proposed\":{\"kind\":");
        buf_json_strz(out, b->proposed_kind);
        if (b->proposed_start_ms >= 0)
            put_time(out, "start", b->proposed_start_ms);
        if (b->proposed_end_ms >= 0)
            put_time(out, "end", b->proposed_end_ms);
        if (b->proposed_title) {
            buf_puts(out, ",\"title\":");
            buf_json_strz(out, b->proposed_title);
        }
        buf_puts(out, "}");
    }
    if (b->conference) {
        buf_puts(out, ",\"conference\":");
        buf_json_strz(out, b->conference);
    }
    if (b->conference_url) {
        buf_puts(out, ",\"conference_url\":");
        buf_json_strz(out, b->conference_url);
    }
    buf_puts(out, "}");
}

void booking_snapshot_json(const struct booking *b, struct buf *out)
{
    buf_puts(out, "{");
    char ts[TIME_RFC3339_MAX];
    time_format_rfc3339(b->start_ms, ts);
    buf_printf(out, "\"start\":\"%s\"", ts);
    put_time(out, "end", b->end_ms);
    buf_puts(out, ",\"title\":");
    buf_json_strz(out, b->title);
    buf_puts(out, ",\"status\":");
    buf_json_strz(out, b->status);
    buf_puts(out, "}");
}

