/* SPDX-License-Identifier: Apache-2.0 */
/* What the TLS handshake already proved about a client certificate: the
 * certificate whose key OpenSSL checked the client certificate's signature
 * with.  A first connect then need not check that signature again when
 * that key is the registered Device CA's (admit.c).
 *
 * OpenSSL gives a plugin no way to the verified chain (Mosquitto keeps the
 * SSL object to itself), so the plugin watches the chain being verified:
 * it wraps OpenSSL's purpose check for TLS clients, which OpenSSL runs on
 * each certificate of a chain it has built, leaf first, before checking
 * the chain's signatures.  The leaf and its issuer (the chain's second
 * certificate, whose key verifies the leaf's signature) are kept in a
 * small table until the CONNECT decision takes them.  OpenSSL's trust check
 * for TLS clients is watched too, so that a leaf is only ever paired with
 * the next certificate of its own chain (handshake.c says why).  The record can be
 * trusted because a client certificate reaches a CONNECT only if its whole
 * verification succeeded: Mosquitto's verify callback (2.0 and 2.1) lets
 * no signature failure through, and a failed verification ends the
 * handshake.  A resumed session brings a certificate that was never
 * watched: it is simply checked in full.  Anything the table does not
 * know, or has dropped, is checked in full too. */
#ifndef PINION_PLUGIN_HANDSHAKE_H
#define PINION_PLUGIN_HANDSHAKE_H

#include <time.h>

#include <openssl/x509.h>

/* Starts watching client-certificate verifications in this process (the
 * broker's main thread: before any listener accepts).  Counted: nested
 * calls (the plugin loaded twice) need as many pn_handshake_unwatch().
 * Returns 0, or -1 if OpenSSL has no purpose check for TLS clients. */
int pn_handshake_watch(void);
void pn_handshake_unwatch(void);

/* The certificate whose key OpenSSL verified leaf's signature with during
 * leaf's handshake (a reference the caller frees with X509_free), or NULL
 * when unknown.  The record is removed: a second call returns NULL. */
X509 *pn_handshake_issuer(X509 *leaf);

/* Drops records older than a minute (handshakes that never reached a
 * CONNECT).  Cheap enough for every TICK: it scans at most once a second. */
void pn_handshake_expire(time_t now);

#endif
