/* log.c -- key=value event lines on stderr. See log.h. */
#include "log.h"

#include "util.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static atomic_int log_min = LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_set_level(enum log_level lv)
{
    atomic_store(&log_min, (int)lv);
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
    time_format_rfc3339(time_now_ms(), ts);
    int n = snprintf(line, sizeof line, "ts=%s level=%s event=%s", ts,
                     level_names[lv], event);
    if (n < 0)
        return;
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
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}
