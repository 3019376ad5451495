/* SPDX-License-Identifier: Apache-2.0 */
/* pinion deployment ...: which devices get which firmware.  A deployment
 * targets the devices of one product whose tags include its tags, whose
 * firmware version matches its requirement, on the firmware's platform and
 * architecture.  piniond does the rollout; this file only edits rows. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "cli.h"
#include "db.h"
#include "output.h"
#include "query.h"
#include "semver.h"

static int parse_count(const char *opt, const char *s, long min, long dflt, long *out)
{
    if (!s) {
        *out = dflt;
        return 0;
    }
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < min || v > 1000000)
        return cli_fail("%s must be a whole number from %ld to 1000000", opt, min), -1;
    *out = v;
    return 0;
}

static const char DEPLOYMENT_SELECT[] =
    "SELECT d.name, o.name AS org, p.name AS product, f.uuid AS firmware, "
    "f.version AS firmware_version, f.platform, f.architecture, to_jsonb(d.tags) AS tags, "
    "d.version_req AS version, d.concurrency, d.max_failures, d.failures, d.state, "
    "d.state_reason AS reason, d.created_at, d.updated_at";

static int print_deployment(struct cli_ctx *ctx, const char *org_id, const char *name)
{
    char sql[2048];
    snprintf(
        sql, sizeof(sql),
        "%s, (SELECT coalesce(jsonb_object_agg(state, n), '{}'::jsonb) FROM (SELECT u.state, "
        "count(*) AS n FROM device_updates u WHERE u.deployment_id = d.id GROUP BY u.state) s) "
        "AS devices FROM deployments d JOIN orgs o ON o.id = d.org_id "
        "JOIN products p ON p.id = d.product_id JOIN firmware f ON f.id = d.firmware_id "
        "WHERE d.org_id = $1 AND d.name = $2",
        DEPLOYMENT_SELECT);
    const char *v[] = {org_id, name};
    char missing[160];
    snprintf(missing, sizeof(missing), "no deployment named '%.64s'", name);
    return cli_show(ctx, sql, 2, v, missing);
}

static int cmd_create(struct cli_ctx *ctx, int argc, char **argv)
{
    const char *fw = NULL, *tags_csv = NULL, *req = "", *conc_s = NULL, *maxf_s = NULL, *pos[3];
    struct cli_opt opts[] = {{"firmware", 1, &fw, NULL},         {"tags", 1, &tags_csv, NULL},
                             {"version", 1, &req, NULL},         {"concurrency", 1, &conc_s, NULL},
                             {"max-failures", 1, &maxf_s, NULL}, {NULL, 0, NULL, NULL}};
    int rc;
    struct pn_err err;
    long conc, maxf;
    char org_id[24], product_id[24], state[6];
    if (cli_parse(ctx, argc, argv, opts, pos, 3, 3, &rc) < 0)
        return rc;
    if (!fw) {
        cli_fail("deployment create needs --firmware UUID");
        return 2; /* a usage error, like any missing argument */
    }
    if (cli_check_name("deployment", pos[2]) < 0 ||
        parse_count("--concurrency", conc_s, 1, 10, &conc) < 0 ||
        parse_count("--max-failures", maxf_s, 0, 0, &maxf) < 0)
        return 1;
    if (pn_semver_req_valid(req, &err) < 0)
        return cli_fail("--version: %s", err.msg);
    char *tags_text = cli_tags_text(tags_csv);
    if (!tags_text)
        return 1;
    rc = 1;
    if (cli_org_product(ctx, pos[0], pos[1], org_id, product_id) < 0)
        goto out;
    const char *fv[] = {fw, org_id, product_id};
    PGresult *res = pn_db_q(ctx->db, &err,
                            "SELECT id, status FROM firmware WHERE uuid = lower($1) "
                            "AND org_id = $2 AND product_id = $3",
                            3, fv);
    if (!res) {
        cli_fail_err(&err);
        goto out;
    }
    if (PQntuples(res) != 1) {
        PQclear(res);
        cli_fail("product '%s' of '%s' has no firmware %s", pos[1], pos[0], fw);
        goto out;
    }
    char fw_id[24];
    snprintf(fw_id, sizeof(fw_id), "%s", PQgetvalue(res, 0, 0));
    int revoked = strcmp(PQgetvalue(res, 0, 1), "active") != 0;
    PQclear(res);
    if (revoked) {
        cli_fail("firmware %s is revoked", fw);
        goto out;
    }
    char conc_t[24], maxf_t[24];
    snprintf(conc_t, sizeof(conc_t), "%ld", conc);
    snprintf(maxf_t, sizeof(maxf_t), "%ld", maxf);
    const char *v[] = {org_id, product_id, pos[2], fw_id, tags_text, req, conc_t, maxf_t};
    res = pn_db_exec(ctx->db, &err,
                     "INSERT INTO deployments (org_id, product_id, name, firmware_id, tags, "
                     "version_req, concurrency, max_failures) VALUES ($1, $2, $3, $4, "
                     "ARRAY(SELECT jsonb_array_elements_text($5::jsonb)), $6, $7, $8)",
                     8, v, NULL, NULL, state);
    if (!res) {
        if (strcmp(state, PN_SQLSTATE_UNIQUE) == 0)
            cli_fail("organisation '%s' already has a deployment '%s'", pos[0], pos[2]);
        else
            cli_fail_err(&err);
        goto out;
    }
    PQclear(res);
    pn_db_audit(ctx->db, NULL, "deployment.create", pos[2], NULL);
    rc = print_deployment(ctx, org_id, pos[2]);
out:
    free(tags_text);
    return rc;
}

/* start / pause.  Starting clears the failure count, so a deployment that
 * paused itself at max-failures can be resumed after the cause is fixed.
 * The count is the number of updates with held_back set (piniond recounts
 * it whenever it holds a device back), so those flags are cleared in the
 * same statement: else the next device held back would bring every earlier
 * one back into the count and pause the deployment again at once. */
static int set_state(struct cli_ctx *ctx, int argc, char **argv, const char *to)
{
    const char *pos[2];
    int rc;
    struct pn_err err;
    char org_id[24];
    if (cli_parse(ctx, argc, argv, NULL, pos, 2, 2, &rc) < 0)
        return rc;
    if (!cli_db(ctx) || cli_org_id(ctx, pos[0], org_id) < 0)
        return 1;
    const char *v[] = {org_id, pos[1], to};
    PGresult *res = pn_db_q(ctx->db, &err,
                            "WITH d AS (UPDATE deployments SET state = $3, state_reason = '', "
                            "updated_at = now(), "
                            "failures = CASE WHEN $3 = 'running' THEN 0 ELSE failures END "
                            "WHERE org_id = $1 AND name = $2 RETURNING id), "
                            "u AS (UPDATE device_updates SET held_back = false "
                            "WHERE $3 = 'running' AND held_back "
                            "AND deployment_id IN (SELECT id FROM d)) "
                            "SELECT count(*) FROM d",
                            3, v);
    if (!res)
        return cli_fail_err(&err);
    int n = atoi(PQgetvalue(res, 0, 0));
    PQclear(res);
    if (n != 1)
        return cli_fail("no deployment named '%s'", pos[1]);
    pn_db_audit(ctx->db, NULL, strcmp(to, "running") == 0 ? "deployment.start" : "deployment.pause",
                pos[1], NULL);
    return print_deployment(ctx, org_id, pos[1]);
}

static int cmd_start(struct cli_ctx *ctx, int argc, char **argv)
{
    return set_state(ctx, argc, argv, "running");
}

static int cmd_pause(struct cli_ctx *ctx, int argc, char **argv)
{
    return set_state(ctx, argc, argv, "paused");
}

static int cmd_show(struct cli_ctx *ctx, int argc, char **argv)
{
    const char *pos[2];
    int rc;
    char org_id[24];
    if (cli_parse(ctx, argc, argv, NULL, pos, 2, 2, &rc) < 0)
        return rc;
    if (!cli_db(ctx) || cli_org_id(ctx, pos[0], org_id) < 0)
        return 1;
    return print_deployment(ctx, org_id, pos[1]);
}

static int cmd_list(struct cli_ctx *ctx, int argc, char **argv)
{
    return cli_list_org(ctx, argc, argv,
                        "SELECT d.name, p.name AS product, f.version AS firmware_version, "
                        "d.state, d.concurrency, d.failures, d.max_failures, "
                        "to_jsonb(d.tags) AS tags, d.version_req AS version "
                        "FROM deployments d JOIN products p ON p.id = d.product_id "
                        "JOIN firmware f ON f.id = d.firmware_id WHERE d.org_id = $1 "
                        "ORDER BY d.name");
}

const struct cli_cmd cli_deployment_cmds[] = {
    {"create", cmd_create,
     "ORG PRODUCT NAME --firmware UUID [--tags a,b] [--version REQ] [--concurrency N] "
     "[--max-failures N]",
     "create a deployment (state 'created'; start it with `deployment start`)",
     "Targets devices of PRODUCT whose tags include every --tags tag, whose current firmware\n"
     "version matches --version (e.g. \"< 1.1.0\", \">= 1.0.0 and < 2.0.0\", \"~> 1.2\"; devices\n"
     "with no known version match only an empty requirement), on the firmware's platform and\n"
     "architecture. At most --concurrency devices (default 10) update at once; the deployment\n"
     "pauses itself after --max-failures failed devices (default 0: never)."},
    {"start", cmd_start, "ORG NAME", "start (or resume) a deployment; clears its failure count",
     NULL},
    {"pause", cmd_pause, "ORG NAME", "pause a deployment: no new devices are released", NULL},
    {"show", cmd_show, "ORG NAME", "show a deployment and how many devices are in each state",
     NULL},
    {"list", cmd_list, "ORG", "list ORG's deployments", NULL},
    {"watch", cli_deployment_watch, "ORG NAME [--interval SECONDS]",
     "follow a rollout live until it is finished (exit 0) or interrupted",
     "On a terminal: counts per state, devices per minute, failures, the last events and the\n"
     "estimated time left, redrawn every --interval seconds (default 1). Otherwise one plain\n"
     "line per change (and one per device event); with --json one JSON object per change.\n"
     "Finished: every device the deployment targets runs its firmware and none is in flight.\n"
     "A paused deployment is still watched. Ctrl-C stops watching (exit 130), not the rollout."},
    {NULL, NULL, NULL, NULL, NULL},
};
