/* buf.c - growable byte buffers; every failure is KYSO_ERR_NOMEM or a size limit. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kyso.h"

static kyso_status buf_reserve(kyso_buf *b, size_t extra)
{
    size_t need, cap;
    char *p;

    if (extra > SIZE_MAX - b->len - 1)
        return KYSO_ERR_NOMEM;
    need = b->len + extra + 1;
    if (need <= b->cap)
        return KYSO_OK;
    cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    p = realloc(b->data, cap);
    if (p == NULL)
        return KYSO_ERR_NOMEM;
    b->data = p;
    b->cap = cap;
    return KYSO_OK;
}

kyso_status kyso_buf_append(kyso_buf *b, const void *p, size_t n)
{
    kyso_status st = buf_reserve(b, n);

    if (st != KYSO_OK)
        return st;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return KYSO_OK;
}

kyso_status kyso_buf_puts(kyso_buf *b, const char *s)
{
    return kyso_buf_append(b, s, strlen(s));
}

kyso_status kyso_buf_printf(kyso_buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;
    kyso_status st;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return KYSO_ERR_INTERNAL;
    if ((st = buf_reserve(b, (size_t)n)) != KYSO_OK)
        return st;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return KYSO_OK;
}

void kyso_buf_reset(kyso_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

void kyso_buf_free(kyso_buf *b)
{
    if (b == NULL)
        return;
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

kyso_status kyso_buf_read_file(kyso_buf *b, const char *path, size_t max)
{
    FILE *f;
    char chunk[65536];
    size_t n;
    kyso_status st = KYSO_OK;

    f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (f == NULL)
        return KYSO_ERR_IO;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (b->len + n > max) {
            st = KYSO_ERR_TOO_BIG;
            goto out;
        }
        if ((st = kyso_buf_append(b, chunk, n)) != KYSO_OK)
            goto out;
    }
    if (ferror(f))
        st = KYSO_ERR_IO;
    if (b->data == NULL && st == KYSO_OK)
        st = kyso_buf_append(b, "", 0);
out:
    if (f != stdin)
        fclose(f);
    return st;
}
