/* SPDX-License-Identifier: Apache-2.0 */
/* What the CLI prints: one-line errors on stderr, query results turned into
 * JSON, and JSON printed as --json or as a table / "key: value" lines.
 * Nothing here talks to the database. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "output.h"

int cli_fail(const char *fmt, ...)
{
    /* One line, whatever the values in it hold (pn_err_set flattens). */
    char raw[PN_ERR_MAX];
    struct pn_err e;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof(raw), fmt, ap);
    va_end(ap);
    pn_err_set(&e, "%s", raw);
    fprintf(stderr, "pinion: %s\n", e.msg);
    return 1;
}

int cli_fail_err(const struct pn_err *err)
{
    return cli_fail("%s", err->msg);
}

json_t *cli_rows(const PGresult *res)
{
    json_t *rows = json_array();
    int nf = PQnfields(res);
    for (int r = 0; r < PQntuples(res); r++) {
        json_t *o = json_object();
        for (int f = 0; f < nf; f++) {
            const char *name = PQfname(res, f);
            const char *v = PQgetvalue(res, r, f);
            json_t *val;
            if (PQgetisnull(res, r, f)) {
                val = json_null();
            } else {
                switch (PQftype(res, f)) {
                case 20: /* int8 */
                case 21: /* int2 */
                case 23: /* int4 */
                    val = json_integer(strtoll(v, NULL, 10));
                    break;
                case 1184: /* timestamptz, printed in UTC: "YYYY-MM-DD HH:MM:SS[.ffff]+00" */
                    if (strlen(v) >= 19 && v[10] == ' ') {
                        char iso[24];
                        snprintf(iso, sizeof(iso), "%.10sT%.8sZ", v, v + 11);
                        val = json_string(iso);
                    } else {
                        val = json_string(v);
                    }
                    break;
                case 16: /* bool */
                    val = json_boolean(v[0] == 't');
                    break;
                case 114:  /* json */
                case 3802: /* jsonb */
                    val = json_loads(v, JSON_DECODE_ANY, NULL);
                    if (!val)
                        val = json_string(v);
                    break;
                default:
                    val = json_string(v);
                }
            }
            json_object_set_new(o, name, val);
        }
        json_array_append_new(rows, o);
    }
    return rows;
}

/* Renders one JSON value for a table cell.  Caller frees. */
static char *cell(const json_t *v)
{
    if (json_is_string(v))
        return pn_printable(strdup(json_string_value(v)));
    if (json_is_null(v))
        return strdup("-");
    if (json_is_array(v)) {
        size_t len = 1, i;
        json_t *e;
        json_array_foreach(v, i, e) len +=
            (json_is_string(e) ? strlen(json_string_value(e)) : 20) + 1;
        char *s = calloc(1, len);
        json_array_foreach(v, i, e)
        {
            if (i)
                strcat(s, ",");
            if (json_is_string(e))
                strcat(s, json_string_value(e));
        }
        if (!s[0]) {
            free(s);
            return strdup("-");
        }
        return s;
    }
    return json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
}

static void print_json(json_t *v)
{
    char *s = json_dumps(v, JSON_INDENT(2) | JSON_ENCODE_ANY);
    puts(s ? s : "null");
    free(s);
}

void cli_print_rows(struct cli_ctx *ctx, json_t *rows)
{
    if (ctx->json) {
        print_json(rows);
        json_decref(rows);
        return;
    }
    if (json_array_size(rows) == 0) {
        puts("(none)");
        json_decref(rows);
        return;
    }
    json_t *first = json_array_get(rows, 0);
    size_t ncol = json_object_size(first), nrow = json_array_size(rows);
    const char **keys = calloc(ncol, sizeof(*keys));
    size_t *width = calloc(ncol, sizeof(*width));
    char **cells = calloc(ncol * nrow, sizeof(*cells));
    const char *k;
    json_t *v;
    size_t c = 0;
    json_object_foreach(first, k, v)
    {
        keys[c] = k;
        width[c] = strlen(k);
        c++;
    }
    for (size_t r = 0; r < nrow; r++)
        for (c = 0; c < ncol; c++) {
            char *s = cell(json_object_get(json_array_get(rows, r), keys[c]));
            cells[r * ncol + c] = s;
            if (strlen(s) > width[c])
                width[c] = strlen(s);
        }
    for (c = 0; c < ncol; c++)
        printf("%-*s%s", c + 1 < ncol ? (int)width[c] : 0, keys[c], c + 1 < ncol ? "  " : "\n");
    for (size_t r = 0; r < nrow; r++)
        for (c = 0; c < ncol; c++) {
            printf("%-*s%s", c + 1 < ncol ? (int)width[c] : 0, cells[r * ncol + c],
                   c + 1 < ncol ? "  " : "\n");
            free(cells[r * ncol + c]);
        }
    free(cells);
    free(width);
    free(keys);
    json_decref(rows);
}

void cli_print_obj(struct cli_ctx *ctx, json_t *obj)
{
    if (ctx->json) {
        print_json(obj);
        json_decref(obj);
        return;
    }
    size_t w = 0;
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v) if (strlen(k) > w) w = strlen(k);
    json_object_foreach(obj, k, v)
    {
        if (json_is_array(v) && json_array_size(v) && json_is_object(json_array_get(v, 0))) {
            printf("%s:\n", k);
            size_t i;
            json_t *e;
            json_array_foreach(v, i, e)
            {
                const char *k2;
                json_t *v2;
                const char *sep = "  - ";
                json_object_foreach(e, k2, v2)
                {
                    char *s = cell(v2);
                    printf("%s%s: %s\n", sep, k2, s);
                    free(s);
                    sep = "    ";
                }
            }
            continue;
        }
        char *s = cell(v);
        printf("%-*s  %s\n", (int)w + 1, k, s);
        free(s);
    }
    json_decref(obj);
}

int cli_print_row(struct cli_ctx *ctx, const PGresult *res, const char *missing)
{
    if (PQntuples(res) < 1)
        return cli_fail("%s", missing);
    json_t *rows = cli_rows(res);
    cli_print_obj(ctx, json_incref(json_array_get(rows, 0)));
    json_decref(rows);
    return 0;
}

char *cli_json_text(const json_t *v)
{
    return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
}
