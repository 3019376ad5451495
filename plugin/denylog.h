/* SPDX-License-Identifier: Apache-2.0 */
/* Rate limiting for the notice lines of denied publishes and subscriptions:
 * the first denial of a client is logged in full, later ones within
 * `interval` seconds are only counted, and the count is reported when the
 * interval ends.  A flood of denied publishes thus costs at most one line
 * per client per interval.  Main thread only; touched only on the denied
 * path and on TICK. */
#ifndef PINION_PLUGIN_DENYLOG_H
#define PINION_PLUGIN_DENYLOG_H

#include <stdbool.h>
#include <time.h>

/* Clients tracked at once; denials of further clients are counted
 * together (a flood of distinct client ids cannot grow memory). */
#define PN_DENYLOG_MAX_CLIENTS 10000

struct pn_denylog;

/* NULL on allocation failure.  interval_s > 0. */
struct pn_denylog *pn_denylog_new(int interval_s);
void pn_denylog_free(struct pn_denylog *dl);

/* Records a denial of `what` (e.g. "publish to 'x/y'") by client_id at
 * now.  Returns true when the caller is to log it now (the client's first
 * denial in its interval); otherwise it was counted. */
bool pn_denylog_hit(struct pn_denylog *dl, const char *client_id, const char *what, time_t now);

/* For every client whose interval has ended: calls report(arg, client_id,
 * count, last_what) when denials were counted (and starts a new interval),
 * else forgets the client.  Clients beyond PN_DENYLOG_MAX_CLIENTS are
 * reported with client_id NULL and last_what "".  Cheap when nothing is
 * tracked. */
typedef void (*pn_denylog_report_fn)(void *arg, const char *client_id, unsigned long count,
                                     const char *last_what);
void pn_denylog_sweep(struct pn_denylog *dl, time_t now, pn_denylog_report_fn report, void *arg);

#endif
