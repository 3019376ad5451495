/* SPDX-License-Identifier: Apache-2.0 */
/* Validation of every name that may end up in a topic, a file name or a
 * table: device identifiers, tags, org/product/key names
 * (docs/protocol.md, "Identities").
 * Pure functions; ASCII-only rules, so invalid UTF-8 is refused too. */
#ifndef PINION_LIB_IDENT_H
#define PINION_LIB_IDENT_H

#include <stdbool.h>
#include <stddef.h>

#define PN_IDENT_MAX 128
#define PN_IDENT_BUF (PN_IDENT_MAX + 1)

/* ^[A-Za-z0-9._:-]{1,128}$ over exactly len bytes (NUL inside refuses). */
bool pn_ident_valid_n(const char *s, size_t len);
/* Same for a NUL-terminated string; NULL is invalid. */
bool pn_ident_valid(const char *s);
/* Valid identifiers no device may have: "events" (R/events/... carries
 * the plugin's and services' events, never a device tree). */
bool pn_ident_reserved(const char *s);
#define PN_EVENTS_LEVEL "events" /* R/events/... */
/* Tags: ^[A-Za-z0-9._:-]{1,64}$ */
bool pn_tag_valid(const char *s);
/* Org, product and key names: ^[A-Za-z0-9._-]{1,64}$ */
bool pn_name_valid(const char *s);
/* A topic root (plugin option topic_root, piniond's topic_root): one or
 * more '/'-separated levels of [A-Za-z0-9._-], at most 200 bytes in all;
 * so no wildcard, no '$', no empty level. */
#define PN_TOPIC_ROOT_MAX 200
bool pn_topic_root_valid(const char *s);

/* A network address as configured ("HOST:PORT", "[IPv6]:PORT"; brokers'
 * service_address, piniond's metrics_listen): copies HOST (without the
 * brackets) into host and sets *port (1-65535).  0, or -1 when addr is not
 * of that form or HOST does not fit in hlen. */
int pn_addr_split(const char *addr, char *host, size_t hlen, int *port);

#endif
