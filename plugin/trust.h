/* SPDX-License-Identifier: Apache-2.0 */
/* The trust directory Mosquitto's `capath` points at: every registered CA
 * certificate and every service identity certificate, one PEM file each,
 * named by subject hash as `openssl rehash` would (<hash>.<n>).  Runs on
 * the worker thread only. */
#ifndef PINION_PLUGIN_TRUST_H
#define PINION_PLUGIN_TRUST_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/x509.h>

#include "err.h"

/* Makes dir hold certs.  With compact (plugin start, before the broker has
 * read the directory) files of ours not in certs are removed and the rest
 * renumbered densely.  Otherwise files are only added, at the next free
 * suffix of their hash: OpenSSL's hash-directory lookup caches what it has
 * read and would miss a renumbered file.  Files not named <8 hex>.<n> are
 * never touched.  Returns the number of files written, or -1. */
int pn_trust_sync(const char *dir, X509 *const *certs, size_t n, bool compact, struct pn_err *err);

#endif
