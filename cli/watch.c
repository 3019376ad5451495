/* SPDX-License-Identifier: Apache-2.0 */
/* pinion deployment watch ORG NAME: a live view of one rollout, read from
 * the database every --interval seconds until the deployment is finished
 * (no targeted device left without its firmware, none in flight) or the
 * user interrupts it.  On a terminal the view is redrawn in place (ANSI
 * escapes, no curses); otherwise, and with --json, one record is printed
 * per change, for logs and scripts. */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "args.h"
#include "cli.h"
#include "db.h"
#include "output.h"
#include "query.h"
#include "semver.h"

#define EVENTS 5
#define RATE_WINDOW_S 300 /* devices per minute over at most the last 5 minutes */
#define STR_(x) #x
#define STR(x) STR_(x)

static volatile sig_atomic_t interrupted;

static void on_interrupt(int sig)
{
    (void)sig;
    interrupted = 1;
}

struct event {
    long long at_us; /* updated_at, microseconds since the epoch */
    char when[16], device[130], state[24], reason[160];
    int attempts;
};

/* One reading of the deployment. */
struct view {
    char state[16], reason[256], firmware[160];
    long concurrency, failures, max_failures;
    long targeted, up_to_date, remaining, inflight, held_back;
    json_t *by_state;  /* device_updates state -> count */
    double per_minute; /* completions */
    long eta_s;        /* -1: unknown */
    struct event ev[EVENTS];
    int nev;
    bool finished;
};

static void view_clear(struct view *v)
{
    json_decref(v->by_state);
    memset(v, 0, sizeof(*v));
}

static long lval(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? 0 : strtol(PQgetvalue(r, row, col), NULL, 10);
}

static void copy(char *dst, size_t n, const char *src)
{
    snprintf(dst, n, "%s", src ? src : "");
}

/* Reads everything the view shows; 0, or -1 after printing the error. */
static int read_view(struct cli_ctx *ctx, const char *dep_id, struct view *v)
{
    struct pn_err err;
    const char *p[] = {dep_id};
    memset(v, 0, sizeof(*v));
    v->eta_s = -1;

    PGresult *r = pn_db_q(
        ctx->db, &err,
        "SELECT dp.state, dp.state_reason, dp.concurrency, dp.failures, dp.max_failures, "
        "pr.name || ' ' || f.version || ' (' || f.uuid || ')', dp.version_req, "
        "(SELECT coalesce(jsonb_object_agg(state, n), '{}'::jsonb)::text FROM (SELECT u.state, "
        " count(*) AS n FROM device_updates u WHERE u.deployment_id = dp.id GROUP BY u.state) s), "
        "(SELECT count(*) FROM device_updates u WHERE u.deployment_id = dp.id AND u.state IN "
        " ('released', 'received', 'downloading', 'installing', 'rescheduled')), "
        "(SELECT count(*) FROM device_updates u WHERE u.deployment_id = dp.id AND "
        " u.state = 'penalty' AND u.penalty_until > now()), "
        /* Completions per minute over the window, or since the first
         * release when that is more recent. */
        "(SELECT count(*) FROM device_updates u WHERE u.deployment_id = dp.id AND "
        " u.state = 'complete' AND u.updated_at > now() - make_interval(secs => $2::int)), "
        "(SELECT extract(epoch FROM now() - greatest(min(u.issued_at), "
        " now() - make_interval(secs => $2::int)))::float8 FROM device_updates u "
        " WHERE u.deployment_id = dp.id) "
        "FROM deployments dp JOIN firmware f ON f.id = dp.firmware_id "
        "JOIN products pr ON pr.id = dp.product_id WHERE dp.id = $1",
        2, (const char *[]){dep_id, STR(RATE_WINDOW_S)});
    if (!r)
        return cli_fail_err(&err), -1;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return cli_fail("the deployment was deleted"), -1;
    }
    copy(v->state, sizeof(v->state), PQgetvalue(r, 0, 0));
    copy(v->reason, sizeof(v->reason), PQgetvalue(r, 0, 1));
    v->concurrency = lval(r, 0, 2);
    v->failures = lval(r, 0, 3);
    v->max_failures = lval(r, 0, 4);
    copy(v->firmware, sizeof(v->firmware), PQgetvalue(r, 0, 5));
    char req[1024]; /* a requirement is at most 512 bytes (lib/semver.c) */
    copy(req, sizeof(req), PQgetvalue(r, 0, 6));
    v->by_state = json_loads(PQgetvalue(r, 0, 7), 0, NULL);
    v->inflight = lval(r, 0, 8);
    v->held_back = lval(r, 0, 9);
    long recent = lval(r, 0, 10);
    double span = PQgetisnull(r, 0, 11) ? 0 : strtod(PQgetvalue(r, 0, 11), NULL);
    PQclear(r);
    if (!v->by_state)
        v->by_state = json_object();
    if (span >= 1)
        v->per_minute = recent * 60.0 / span;

    /* Targeted devices, as piniond selects them, counted by firmware
     * version so that the SemVer requirement is applied to a handful of
     * groups (in C, like piniond) rather than to every device. */
    r = pn_db_q(ctx->db, &err,
                "SELECT d.firmware_version, count(*) FILTER (WHERE d.firmware_uuid = f.uuid), "
                "count(*) FILTER (WHERE d.firmware_uuid IS DISTINCT FROM f.uuid) "
                "FROM deployments dp JOIN firmware f ON f.id = dp.firmware_id "
                "JOIN devices d ON d.org_id = dp.org_id AND d.product_id = dp.product_id "
                "WHERE dp.id = $1 AND d.status = 'active' AND d.tags @> dp.tags "
                "AND d.firmware_platform = f.platform AND d.firmware_architecture = f.architecture "
                "GROUP BY d.firmware_version",
                1, p);
    if (!r)
        return cli_fail_err(&err), -1;
    for (int i = 0; i < PQntuples(r); i++) {
        const char *ver = PQgetisnull(r, i, 0) ? NULL : PQgetvalue(r, i, 0);
        long on = lval(r, i, 1), off = lval(r, i, 2);
        v->up_to_date += on;
        if (!req[0] || (ver && pn_semver_matches(ver, req)))
            v->remaining += off;
    }
    PQclear(r);
    v->targeted = v->up_to_date + v->remaining;
    if (v->remaining == 0)
        v->eta_s = 0;
    else if (v->per_minute > 0)
        v->eta_s = (long)(v->remaining * 60.0 / v->per_minute + 0.999);
    v->finished = v->remaining == 0 && v->inflight == 0;

    r = pn_db_q(
        ctx->db, &err,
        "SELECT (extract(epoch FROM u.updated_at) * 1000000)::bigint, "
        "to_char(u.updated_at, 'HH24:MI:SS'), d.identifier, u.state, u.reason, u.attempts "
        "FROM device_updates u JOIN devices d ON d.id = u.device_id "
        "WHERE u.deployment_id = $1 ORDER BY u.updated_at DESC, u.device_id DESC LIMIT " STR(
            EVENTS),
        1, p);
    if (!r)
        return cli_fail_err(&err), -1;
    /* Oldest first, as a log reads. */
    v->nev = PQntuples(r);
    for (int i = 0; i < v->nev; i++) {
        struct event *e = &v->ev[v->nev - 1 - i];
        e->at_us = strtoll(PQgetvalue(r, i, 0), NULL, 10);
        copy(e->when, sizeof(e->when), PQgetvalue(r, i, 1));
        copy(e->device, sizeof(e->device), PQgetvalue(r, i, 2));
        copy(e->state, sizeof(e->state), PQgetvalue(r, i, 3));
        copy(e->reason, sizeof(e->reason), PQgetvalue(r, i, 4));
        e->attempts = (int)lval(r, i, 5);
    }
    PQclear(r);
    return 0;
}

/* States in which an update no longer moves by itself. */
static bool ended(const char *state)
{
    return !strcmp(state, "complete") || !strcmp(state, "penalty") || !strcmp(state, "expired") ||
           !strcmp(state, "cancelled");
}

static void fmt_eta(long s, char *out, size_t n)
{
    if (s < 0)
        snprintf(out, n, "unknown");
    else if (s >= 3600)
        snprintf(out, n, "%ldh%02ldm", s / 3600, s / 60 % 60);
    else if (s >= 60)
        snprintf(out, n, "%ldm%02lds", s / 60, s % 60);
    else
        snprintf(out, n, "%lds", s);
}

/* "released 1, downloading 2, complete 4" */
static void fmt_states(const struct view *v, char *out, size_t n)
{
    const char *k;
    json_t *val;
    size_t len = 0;
    out[0] = '\0';
    json_object_foreach(v->by_state, k, val)
    {
        int w = snprintf(out + len, n - len, "%s%s %lld", len ? ", " : "", k,
                         (long long)json_integer_value(val));
        if (w < 0 || (size_t)w >= n - len)
            break;
        len += (size_t)w;
    }
    if (!len)
        snprintf(out, n, "none yet");
}

static void fmt_event(const struct event *e, char *out, size_t n)
{
    if (e->reason[0])
        snprintf(out, n, "%s %s %s (attempt %d: %s)", e->when, e->device, e->state, e->attempts,
                 e->reason);
    else
        snprintf(out, n, "%s %s %s", e->when, e->device, e->state);
}

/* The summary that decides whether anything changed (time-derived fields
 * such as the rate and the estimate are left out). */
static char *summary(const struct view *v)
{
    char states[512], buf[2048];
    fmt_states(v, states, sizeof(states));
    int n = snprintf(buf, sizeof(buf), "%s|%s|%ld|%ld|%ld|%ld|%ld|%s", v->state, v->reason,
                     v->failures, v->targeted, v->remaining, v->inflight, v->held_back, states);
    /* The last events' devices and states, not their times: a progress
     * report is not a change. */
    for (int i = 0; i < v->nev && n > 0 && (size_t)n < sizeof(buf); i++)
        n += snprintf(buf + n, sizeof(buf) - (size_t)n, "|%s:%s", v->ev[i].device, v->ev[i].state);
    return strdup(buf);
}

static void draw_tty(const char *org, const char *name, const struct view *v)
{
    char states[512], eta[32], line[512];
    fmt_states(v, states, sizeof(states));
    fmt_eta(v->eta_s, eta, sizeof(eta));
    /* Home, clear to the end of the screen: redrawn in place. */
    printf("\033[H\033[J");
    printf("deployment %s/%s: %s%s%s\n", org, name, v->state, v->reason[0] ? " - " : "", v->reason);
    printf("firmware   %s, concurrency %ld\n\n", v->firmware, v->concurrency);
    printf("devices    %ld targeted: %ld up to date, %ld to go (%ld in flight, %ld held back)\n",
           v->targeted, v->up_to_date, v->remaining, v->inflight, v->held_back);
    printf("states     %s\n", states);
    printf("failures   %ld", v->failures);
    if (v->max_failures)
        printf(" (pauses at %ld)", v->max_failures);
    printf("\nrate       %.1f devices/min, time left %s\n\n", v->per_minute, eta);
    printf("last events:\n");
    for (int i = 0; i < v->nev; i++) {
        fmt_event(&v->ev[i], line, sizeof(line));
        printf("  %s\n", line);
    }
    if (!v->nev)
        printf("  (none yet)\n");
    if (v->finished)
        printf("\nfinished: every targeted device runs the firmware, none in flight\n");
    else
        printf("\n(Ctrl-C to stop watching; the rollout goes on)\n");
    fflush(stdout);
}

/* Lines "event ..." for every device whose update state changed since
 * *last_event (advanced), oldest first: more than the view's last few when
 * many changed between two readings.  A device's row holds only its latest
 * state, so a state passed through between two readings is not seen.
 * `inflight` (device -> state) remembers the state last printed of devices
 * not yet at an end, so that progress reports, which touch the row without
 * changing its state, print nothing; its size is bounded by the
 * deployment's concurrency. */
static int print_new_events(struct cli_ctx *ctx, const char *dep_id, long long *last_event,
                            json_t *inflight)
{
    struct pn_err err;
    char since[24], line[512];
    snprintf(since, sizeof(since), "%lld", *last_event);
    const char *p[] = {dep_id, since};
    PGresult *r = pn_db_q(ctx->db, &err,
                          "SELECT (extract(epoch FROM u.updated_at) * 1000000)::bigint, "
                          "to_char(u.updated_at, 'HH24:MI:SS'), d.identifier, u.state, u.reason, "
                          "u.attempts FROM device_updates u JOIN devices d ON d.id = u.device_id "
                          "WHERE u.deployment_id = $1 AND u.updated_at > to_timestamp($2::bigint "
                          "/ 1000000.0) ORDER BY u.updated_at, u.device_id",
                          2, p);
    if (!r)
        return cli_fail_err(&err), -1;
    for (int i = 0; i < PQntuples(r); i++) {
        struct event e;
        long long at = strtoll(PQgetvalue(r, i, 0), NULL, 10);
        if (at <= *last_event)
            continue; /* to_timestamp() rounds */
        copy(e.when, sizeof(e.when), PQgetvalue(r, i, 1));
        copy(e.device, sizeof(e.device), PQgetvalue(r, i, 2));
        copy(e.state, sizeof(e.state), PQgetvalue(r, i, 3));
        copy(e.reason, sizeof(e.reason), PQgetvalue(r, i, 4));
        e.attempts = (int)lval(r, i, 5);
        *last_event = at;
        const char *was = json_string_value(json_object_get(inflight, e.device));
        if (was && !strcmp(was, e.state))
            continue;
        if (ended(e.state))
            json_object_del(inflight, e.device);
        else
            json_object_set_new(inflight, e.device, json_string(e.state));
        fmt_event(&e, line, sizeof(line));
        printf("event %s\n", line);
    }
    PQclear(r);
    return 0;
}

/* A plain line per change. */
static void print_plain(const char *org, const char *name, const struct view *v)
{
    char states[512], eta[32], when[16];
    fmt_states(v, states, sizeof(states));
    fmt_eta(v->eta_s, eta, sizeof(eta));
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(when, sizeof(when), "%H:%M:%S", &tm);
    printf("%s %s/%s %s%s%s: %ld targeted, %ld up to date, %ld to go, %ld in flight, %ld held "
           "back; %s; %ld failures; %.1f devices/min; time left %s%s\n",
           when, org, name, v->state, v->reason[0] ? " - " : "", v->reason, v->targeted,
           v->up_to_date, v->remaining, v->inflight, v->held_back, states, v->failures,
           v->per_minute, eta, v->finished ? "; finished" : "");
    fflush(stdout);
}

static void print_json(const char *org, const char *name, const struct view *v)
{
    json_t *ev = json_array();
    for (int i = 0; i < v->nev; i++)
        json_array_append_new(ev,
                              json_pack("{s:s, s:s, s:s, s:s, s:i}", "at", v->ev[i].when, "device",
                                        v->ev[i].device, "state", v->ev[i].state, "reason",
                                        v->ev[i].reason, "attempts", v->ev[i].attempts));
    json_t *o = json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:O, s:I, s:f, "
        "s:o, s:o, s:b}",
        "org", org, "deployment", name, "state", v->state, "reason", v->reason, "firmware",
        v->firmware, "concurrency", (json_int_t)v->concurrency, "targeted", (json_int_t)v->targeted,
        "up_to_date", (json_int_t)v->up_to_date, "remaining", (json_int_t)v->remaining, "inflight",
        (json_int_t)v->inflight, "held_back", (json_int_t)v->held_back, "failures",
        (json_int_t)v->failures, "devices", v->by_state, "max_failures",
        (json_int_t)v->max_failures, "per_minute", v->per_minute, "eta_s",
        v->eta_s < 0 ? json_null() : json_integer(v->eta_s), "events", ev, "finished", v->finished);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    if (s)
        printf("%s\n", s);
    free(s);
    json_decref(o);
    fflush(stdout);
}

int cli_deployment_watch(struct cli_ctx *ctx, int argc, char **argv)
{
    const char *interval_s = NULL, *pos[2];
    struct cli_opt opts[] = {{"interval", 1, &interval_s, NULL}, {NULL, 0, NULL, NULL}};
    int rc;
    char org_id[24], dep_id[24];
    struct pn_err err;
    if (cli_parse(ctx, argc, argv, opts, pos, 2, 2, &rc) < 0)
        return rc;
    double interval = 1;
    if (interval_s) {
        char *end;
        errno = 0;
        interval = strtod(interval_s, &end);
        if (errno || *end || end == interval_s || !(interval >= 0.2 && interval <= 3600))
            return cli_fail("--interval must be a number of seconds from 0.2 to 3600");
    }
    if (!cli_db(ctx) || cli_org_id(ctx, pos[0], org_id) < 0)
        return 1;
    const char *v[] = {org_id, pos[1]};
    PGresult *r =
        pn_db_q(ctx->db, &err, "SELECT id FROM deployments WHERE org_id = $1 AND name = $2", 2, v);
    if (!r)
        return cli_fail_err(&err);
    if (PQntuples(r) != 1) {
        PQclear(r);
        return cli_fail("no deployment named '%s'", pos[1]);
    }
    copy(dep_id, sizeof(dep_id), PQgetvalue(r, 0, 0));
    PQclear(r);

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_interrupt;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    bool tty = !ctx->json && isatty(STDOUT_FILENO);
    char *last = NULL;
    long long last_event = 0;
    json_t *inflight = json_object();
    rc = 1;
    while (!interrupted) {
        struct view view;
        if (read_view(ctx, dep_id, &view) < 0) {
            view_clear(&view);
            break;
        }
        /* Event lines start with what happens from now on: a deployment
         * may have a million devices behind it. */
        if (!last && view.nev)
            last_event = view.ev[view.nev - 1].at_us;
        char *now = summary(&view);
        bool changed = !last || !now || strcmp(now, last) != 0;
        if (tty)
            draw_tty(pos[0], pos[1], &view); /* every time: the rate and estimate move */
        else if (changed && ctx->json)
            print_json(pos[0], pos[1], &view);
        else if (changed && print_new_events(ctx, dep_id, &last_event, inflight) == 0)
            print_plain(pos[0], pos[1], &view);
        free(last);
        last = now;
        bool finished = view.finished;
        view_clear(&view);
        if (finished) {
            rc = 0;
            break;
        }
        struct timespec ts = {(time_t)interval, (long)((interval - (long)interval) * 1e9)};
        nanosleep(&ts, NULL); /* cut short by Ctrl-C */
    }
    free(last);
    json_decref(inflight);
    if (interrupted)
        rc = 130; /* as a shell reports a command ended by SIGINT */
    return rc;
}
