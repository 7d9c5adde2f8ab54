/* log.c -- key=value event lines on stderr. See log.h. */
#include "log.h"

#include "util.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static atomic_int log_min = LOG_INFO;
static atomic_int log_json;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_set_level(enum log_level lv)
{
    atomic_store(&log_min, (int)lv);
}

void log_set_json(int on)
{
    atomic_store(&log_json, on ? 1 : 0);
}

/* A JSON writer over a fixed buffer; `bad` once it ran out of room. */
struct jw {
    char *p;
    size_t n, cap;
    int bad;
};

static void jw_put(struct jw *w, const char *s, size_t n)
{
    if (w->bad || w->n + n >= w->cap) {
        w->bad = 1;
        return;
    }
    memcpy(w->p + w->n, s, n);
    w->n += n;
}

/* A JSON string from raw bytes (quotes, backslashes, controls escaped). */
static void jw_str(struct jw *w, const char *s, size_t n)
{
    jw_put(w, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            jw_put(w, esc, 2);
        } else if (c == '\n') {
            jw_put(w, "\\n", 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            jw_put(w, esc, 6);
        } else {
            jw_put(w, (const char *)&s[i], 1);
        }
    }
    jw_put(w, "\"", 1);
}

static int is_number(const char *s, size_t n)
{
    size_t i = 0, digits = 0;
    if (i < n && s[i] == '-')
        i++;
    if (i < n && s[i] == '0' && i + 1 < n && s[i + 1] != '.')
        return 0; /* leading zero: an id or a version, keep it a string */
    while (i < n && s[i] >= '0' && s[i] <= '9')
        i++, digits++;
    if (digits == 0 || digits > 15)
        return 0;
    if (i < n && s[i] == '.') {
        size_t frac = 0;
        for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++)
            frac++;
        if (frac == 0)
            return 0;
    }
    return i == n;
}

size_t log_kv_to_json(const char *line, size_t len, char *out, size_t cap)
{
    struct jw w = {out, 0, cap, 0};
    const char *p = line, *end = line + len;
    int first = 1;
    jw_put(&w, "{", 1);
    while (p < end) {
        while (p < end && *p == ' ')
            p++;
        if (p >= end)
            break;
        const char *k = p;
        while (p < end && *p != '=' && *p != ' ')
            p++;
        if (p >= end || *p != '=') {
            /* a word without "=" (a value with a space nobody quoted):
             * kept, under its own key, rather than dropped */
            jw_put(&w, first ? "\"text\":" : ",\"text\":", first ? 7 : 8);
            jw_str(&w, k, (size_t)(p - k));
            first = 0;
            continue;
        }
        size_t klen = (size_t)(p - k);
        p++; /* '=' */
        jw_put(&w, first ? "" : ",", first ? 0 : 1);
        first = 0;
        jw_str(&w, k, klen);
        jw_put(&w, ":", 1);
        if (p < end && *p == '"') {
            /* log_q's quoting: \" \\ and \n inside; unescape, re-escape */
            char val[512];
            size_t vn = 0;
            for (p++; p < end && *p != '"'; p++) {
                char c = *p;
                if (c == '\\' && p + 1 < end) {
                    p++;
                    c = *p == 'n' ? '\n' : *p;
                }
                if (vn < sizeof val)
                    val[vn++] = c;
            }
            if (p < end)
                p++; /* closing quote */
            jw_str(&w, val, vn);
        } else {
            const char *v = p;
            while (p < end && *p != ' ')
                p++;
            size_t vn = (size_t)(p - v);
            if (vn == 1 && *v == '-')
                jw_put(&w, "null", 4);
            else if (is_number(v, vn))
                jw_put(&w, v, vn);
            else
                jw_str(&w, v, vn);
        }
    }
    jw_put(&w, "}", 1);
    return w.bad ? 0 : w.n;
}

int log_level_parse(const char *s, enum log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

const char *log_q(const char *s)
{
    static _Thread_local char ring[4][256];
    static _Thread_local unsigned slot;
    char *out = ring[slot++ & 3];
    if (!s) {
        strcpy(out, "-");
        return out;
    }
    int need_quote = *s == '\0';
    for (const char *p = s; *p && !need_quote; p++)
        if (*p == ' ' || *p == '"' || *p == '=' || (unsigned char)*p < 0x20)
            need_quote = 1;
    if (!need_quote) {
        size_t n = strlen(s);
        if (n < 256) {
            memcpy(out, s, n + 1);
            return out;
        }
    }
    size_t o = 0;
    out[o++] = '"';
    for (const char *p = s; *p; p++) {
        if (o > 256 - 8) {
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else if (c < 0x20) {
            out[o++] = '?';
        } else {
            out[o++] = (char)c;
        }
    }
    out[o++] = '"';
    out[o] = '\0';
    return out;
}

void log_event(enum log_level lv, const char *event, const char *fmt, ...)
{
    if ((int)lv < atomic_load(&log_min))
        return;
    char line[2048];
    char ts[TIME_RFC3339_MAX];
    time_format_rfc3339_ms(time_now_ms(), ts);
    int n = snprintf(line, sizeof line, "ts=%s level=%s event=%s", ts,
                     level_names[lv], event);
    if (n < 0)
        return;
    size_t head = (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;
    if (fmt && *fmt && (size_t)n < sizeof line - 2) {
        line[n++] = ' ';
        va_list ap;
        va_start(ap, fmt);
        int m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
        va_end(ap);
        if (m > 0)
            n += m;
    }
    if ((size_t)n >= sizeof line - 1)
        n = sizeof line - 2;
    if (atomic_load(&log_json)) {
        char js[4096];
        size_t jn = log_kv_to_json(line, (size_t)n, js, sizeof js - 1);
        if (jn == 0) {
            /* a tail that escapes to more than the buffer: still one JSON
             * object, with ts, level and event, marked as cut */
            static const char cut[] = ",\"truncated\":true}";
            jn = log_kv_to_json(line, head, js, sizeof js - sizeof cut - 1);
            if (jn > 0) {
                memcpy(js + jn - 1, cut, sizeof cut - 1);
                jn += sizeof cut - 2;
            }
        }
        if (jn > 0) {
            js[jn++] = '\n';
            ssize_t w = write(STDERR_FILENO, js, jn);
            (void)w;
            return;
        }
    }
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}
