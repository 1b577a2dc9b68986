/*
 * log.c - the one logger: syslog, or stderr in the foreground and in the CLI.
 * Lines read "<queue-id> <event> key=value ..." so they can be grepped and
 * parsed; OpenSSL's per-thread error queue is drained into the same stream.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <syslog.h>

#include <openssl/err.h>

#include "kyso.h"

static int log_syslog;
static kyso_log_level log_max = KYSO_LOG_INFO;
static const char *log_ident = "kyso";
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

void kyso_log_open(const char *ident, int use_syslog, kyso_log_level max_level)
{
    log_ident = ident ? ident : "kyso";
    log_max = max_level;
    log_syslog = use_syslog;
    if (use_syslog)
        openlog(log_ident, LOG_PID | LOG_NDELAY, LOG_MAIL);
}

static int syslog_priority(kyso_log_level level)
{
    switch (level) {
    case KYSO_LOG_ERR:
        return LOG_ERR;
    case KYSO_LOG_WARNING:
        return LOG_WARNING;
    case KYSO_LOG_INFO:
        return LOG_INFO;
    case KYSO_LOG_NONE:
    case KYSO_LOG_DEBUG:
        break;
    }
    return LOG_DEBUG;
}

static void log_line(kyso_log_level level, const char *qid, const char *event, const char *text)
{
    if (log_syslog) {
        syslog(syslog_priority(level), "%s %s %s", qid ? qid : "-", event, text);
        return;
    }
    /* One fprintf under a lock keeps lines from different threads whole. */
    pthread_mutex_lock(&log_lock);
    fprintf(stderr, "%s: %s %s %s\n", log_ident, qid ? qid : "-", event, text);
    pthread_mutex_unlock(&log_lock);
}

void kyso_log(kyso_log_level level, const char *qid, const char *event, const char *fmt, ...)
{
    char text[2048];
    va_list ap;

    if (level > log_max)
        return;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    log_line(level, qid, event, text);
}

void kyso_log_openssl(kyso_log_level level, const char *qid, const char *event)
{
    unsigned long e;
    const char *file, *data;
    int line, flags;
    char reason[256], text[600];

    while ((e = ERR_get_error_all(&file, &line, NULL, &data, &flags)) != 0) {
        if (level > log_max)
            continue;
        ERR_error_string_n(e, reason, sizeof(reason));
        snprintf(text, sizeof(text), "openssl=\"%s\"%s%s%s", reason,
                 (flags & ERR_TXT_STRING) && data && *data ? " detail=\"" : "",
                 (flags & ERR_TXT_STRING) && data ? data : "",
                 (flags & ERR_TXT_STRING) && data && *data ? "\"" : "");
        log_line(level, qid, event, text);
    }
}
