/* SPDX-License-Identifier: Apache-2.0 */
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cert.h"
#include "cli.h"
#include "db.h"
#include "ident.h"
#include "migrate.h"

#define MAX_OPTS 32

static void print_usage(const struct cli_ctx *ctx, FILE *out, int full)
{
    const struct cli_cmd *c = ctx->cmd;
    fprintf(out, "usage: pinion %s %s %s\n", ctx->group, c->name, c->usage ? c->usage : "");
    if (!full)
        return;
    fprintf(out, "\n%s\n", c->summary);
    if (c->help)
        fprintf(out, "\n%s\n", c->help);
    fprintf(out, "\ncommon options:\n"
                 "  --db CONNINFO   PostgreSQL conninfo or URI (default: $PINION_DB)\n"
                 "  --json          print JSON instead of a table\n"
                 "  --help          this text\n");
}

int cli_parse(struct cli_ctx *ctx, int argc, char **argv, const struct cli_opt *opts,
              const char **pos, int min, int max, int *exit_code)
{
    struct option lo[MAX_OPTS + 4];
    int n = 0, help = 0, npos = 0;

    for (; opts && opts[n].name && n < MAX_OPTS; n++)
        lo[n] = (struct option){opts[n].name, opts[n].has_arg ? required_argument : no_argument,
                                NULL, 1000 + n};
    lo[n++] = (struct option){"db", required_argument, NULL, 'd'};
    lo[n++] = (struct option){"json", no_argument, NULL, 'j'};
    lo[n++] = (struct option){"help", no_argument, NULL, 'h'};
    lo[n] = (struct option){NULL, 0, NULL, 0};

    optind = 0; /* GNU: full re-initialisation for each subcommand */
    opterr = 0;
    for (;;) {
        int prev = optind ? optind : 1;
        int c = getopt_long(argc, argv, "-h", lo, NULL);
        if (c == -1)
            break;
        if (c == 1) { /* positional, in order */
            if (npos >= max) {
                fprintf(stderr, "pinion %s %s: unexpected argument '%s'\n", ctx->group,
                        ctx->cmd->name, optarg);
                print_usage(ctx, stderr, 0);
                *exit_code = 2;
                return -1;
            }
            pos[npos++] = optarg;
        } else if (c == 'd') {
            ctx->conninfo = optarg;
        } else if (c == 'j') {
            ctx->json = 1;
        } else if (c == 'h') {
            help = 1;
        } else if (c >= 1000) {
            const struct cli_opt *o = &opts[c - 1000];
            if (o->has_arg)
                *o->value = optarg;
            else
                *o->flag = 1;
        } else {
            const char *bad = prev < argc ? argv[prev] : "?";
            fprintf(stderr, "pinion %s %s: bad or incomplete option '%s'\n", ctx->group,
                    ctx->cmd->name, bad);
            print_usage(ctx, stderr, 0);
            *exit_code = 2;
            return -1;
        }
    }
    if (help) {
        print_usage(ctx, stdout, 1);
        *exit_code = 0;
        return -1;
    }
    if (npos < min) {
        fprintf(stderr, "pinion %s %s: missing argument\n", ctx->group, ctx->cmd->name);
        print_usage(ctx, stderr, 0);
        *exit_code = 2;
        return -1;
    }
    return npos;
}

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

PGconn *cli_db_raw(struct cli_ctx *ctx)
{
    struct pn_err err;
    if (ctx->db)
        return ctx->db;
    const char *ci = ctx->conninfo ? ctx->conninfo : getenv("PINION_DB");
    ctx->db = pn_db_connect(ci, &err);
    if (!ctx->db)
        cli_fail_err(&err);
    return ctx->db;
}

PGconn *cli_db(struct cli_ctx *ctx)
{
    struct pn_err err;
    int fresh = ctx->db == NULL;
    PGconn *db = cli_db_raw(ctx);
    if (db && fresh && pn_db_check_schema(db, &err) < 0) {
        cli_fail_err(&err);
        return NULL;
    }
    return db;
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
        json_array_foreach(v, i, e) len += (json_is_string(e) ? strlen(json_string_value(e)) : 20) + 1;
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

json_t *cli_tags(const char *csv)
{
    json_t *tags = json_array();
    if (!csv || !*csv)
        return tags;
    char *dup = strdup(csv), *save = NULL;
    for (char *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (!pn_tag_valid(t)) {
            cli_fail("invalid tag '%s': tags are 1-64 characters of A-Z a-z 0-9 . _ : -", t);
            json_decref(tags);
            free(dup);
            return NULL;
        }
        int dup_tag = 0;
        size_t i;
        json_t *e;
        json_array_foreach(tags, i, e) if (strcmp(json_string_value(e), t) == 0) dup_tag = 1;
        if (!dup_tag)
            json_array_append_new(tags, json_string(t));
    }
    free(dup);
    return tags;
}

char *cli_tags_text(const char *csv)
{
    json_t *tags = cli_tags(csv);
    char *text = tags ? cli_json_text(tags) : NULL;
    json_decref(tags);
    return text;
}

int cli_check_identifier(const char *identifier)
{
    if (!pn_ident_valid(identifier))
        return cli_fail("invalid device identifier '%s': use 1-128 characters of "
                        "A-Z a-z 0-9 . _ : -", identifier),
               -1;
    if (pn_ident_reserved(identifier))
        return cli_fail("device identifier '%s' is reserved", identifier), -1;
    return 0;
}

int cli_org_product(struct cli_ctx *ctx, const char *org, const char *product, char org_id[24],
                    char product_id[24])
{
    if (!cli_db(ctx) || cli_org_id(ctx, org, org_id) < 0 ||
        cli_product_id(ctx, org_id, org, product, product_id) < 0)
        return -1;
    return 0;
}

int cli_check_name(const char *what, const char *name)
{
    if (pn_name_valid(name))
        return 0;
    cli_fail("invalid %s name '%s': use 1-64 characters of A-Z a-z 0-9 . _ -", what, name);
    return -1;
}

char *cli_json_text(const json_t *v)
{
    return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
}

int cli_org_id(struct cli_ctx *ctx, const char *org, char id[24])
{
    struct pn_err err;
    const char *v[] = {org};
    PGresult *res = pn_db_q(ctx->db, &err, "SELECT id FROM orgs WHERE name = $1", 1, v);
    if (!res)
        return cli_fail_err(&err), -1;
    if (PQntuples(res) != 1) {
        PQclear(res);
        cli_fail("no organisation named '%s'", org);
        return -1;
    }
    snprintf(id, 24, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    return 0;
}

int cli_product_id(struct cli_ctx *ctx, const char *org_id, const char *org,
                   const char *product, char id[24])
{
    struct pn_err err;
    const char *v[] = {org_id, product};
    PGresult *res = pn_db_q(ctx->db, &err,
                            "SELECT id FROM products WHERE org_id = $1 AND name = $2", 2, v);
    if (!res)
        return cli_fail_err(&err), -1;
    if (PQntuples(res) != 1) {
        PQclear(res);
        cli_fail("organisation '%s' has no product named '%s'", org, product);
        return -1;
    }
    snprintf(id, 24, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    return 0;
}

int cli_resolve_cert(struct cli_ctx *ctx, char table, const char *arg, char id[65])
{
    struct pn_err err;
    char prefix[65];
    size_t n = strlen(arg);
    if (n < 8 || n > 64) {
        cli_fail("'%s' is not a certificate id (8 to 64 hex digits)", arg);
        return -1;
    }
    for (size_t i = 0; i <= n; i++) {
        char c = arg[i];
        if (c >= 'A' && c <= 'F')
            c = (char)(c - 'A' + 'a');
        if (c && !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            cli_fail("'%s' is not a certificate id (8 to 64 hex digits)", arg);
            return -1;
        }
        prefix[i] = c;
    }
    const char *v[] = {prefix};
    const char *sql = table == 'c'
                          ? "SELECT id FROM ca_certificates WHERE id LIKE $1 || '%' LIMIT 2"
                          : "SELECT id FROM device_certificates WHERE id LIKE $1 || '%' LIMIT 2";
    PGresult *res = pn_db_q(ctx->db, &err, sql, 1, v);
    if (!res)
        return cli_fail_err(&err), -1;
    int rows = PQntuples(res);
    if (rows == 1)
        snprintf(id, 65, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    if (rows == 0) {
        cli_fail("no %s certificate with id %s", table == 'c' ? "CA" : "device", prefix);
        return -1;
    }
    if (rows > 1) {
        cli_fail("certificate id prefix %s is ambiguous; give more digits", prefix);
        return -1;
    }
    return 0;
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

int cli_show(struct cli_ctx *ctx, const char *sql, int n, const char *const *values,
             const char *missing)
{
    struct pn_err err;
    PGresult *res = pn_db_q(ctx->db, &err, sql, n, values);
    if (!res)
        return cli_fail_err(&err);
    int rc = cli_print_row(ctx, res, missing);
    PQclear(res);
    return rc;
}

int cli_list(struct cli_ctx *ctx, const char *sql, int n, const char *const *values)
{
    struct pn_err err;
    PGresult *res = pn_db_q(ctx->db, &err, sql, n, values);
    if (!res)
        return cli_fail_err(&err);
    cli_print_rows(ctx, cli_rows(res));
    PQclear(res);
    return 0;
}

int cli_list_org(struct cli_ctx *ctx, int argc, char **argv, const char *sql)
{
    const char *pos[1];
    int rc;
    char org_id[24];
    if (cli_parse(ctx, argc, argv, NULL, pos, 1, 1, &rc) < 0)
        return rc;
    if (!cli_db(ctx) || cli_org_id(ctx, pos[0], org_id) < 0)
        return 1;
    const char *v[] = {org_id};
    return cli_list(ctx, sql, 1, v);
}

int cli_ca_load(const char *dir, const char *cert_path, const char *key_path, X509 **cert,
                EVP_PKEY **key, const char **label)
{
    struct pn_err err;
    *cert = NULL;
    *key = NULL;
    if (dir && (cert_path || key_path)) {
        cli_fail("give either --ca DIR or --ca-cert FILE with --ca-key FILE, not both");
        return -1;
    }
    if (!dir && (!cert_path || !key_path)) {
        cli_fail("the CA: --ca DIR (DIR/ca.pem and DIR/ca.key), or --ca-cert FILE and "
                 "--ca-key FILE");
        return -1;
    }
    int rc = dir ? pn_ca_dir_load(dir, cert, key, &err)
                 : pn_ca_files_load(cert_path, key_path, cert, key, &err);
    if (rc < 0) {
        cli_fail_err(&err);
        return -1;
    }
    *label = dir ? dir : cert_path;
    return 0;
}
