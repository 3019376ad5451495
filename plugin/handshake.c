/* SPDX-License-Identifier: Apache-2.0 */
/* See handshake.h.  OpenSSL's check_extensions() (x509_vfy.c) calls
 * X509_check_purpose() on the built chain in order: the leaf (require_ca
 * 0), then its issuer (require_ca 1), and so on; the signatures are
 * checked after that, each certificate's with the next one's key.
 *
 * OpenSSL skips the purpose check of a trusted certificate whose explicit
 * trust settings (X509_AUX, from a TRUSTED CERTIFICATE file) trust it for
 * TLS clients (x509_vfy.c, check_purpose()).  Skipped, the issuer leaves
 * its leaf pending, and a skipped leaf (found in the store as it is, with
 * PARTIAL_CHAIN) lets its chain's first CA find the pending leaf of an
 * earlier chain: a certificate the client made up (the registered CA's
 * name and key) would be recorded as the issuer of a device it never
 * verified.  So the trust check for TLS clients is watched too: a chain
 * being built (OpenSSL's check_trust() asks without NO_SS_COMPAT), or a
 * purpose check replaced by trust settings, drops the pending leaf, which
 * therefore never reaches past the next certificate of its own chain.  The
 * pending leaf is a reference, so a chain abandoned between its leaf and
 * its issuer leaves nothing dangling.  This holds for verifications with
 * the trust id X509_TRUST_SSL_CLIENT (others never reach the watched trust
 * entry): the plugin's "ssl_client" parameters set it (plugin.c,
 * install_verify_params), and Mosquitto sets no trust or purpose of its own. */
#include "handshake.h"

#include <pthread.h>
#include <stdint.h>

#include <openssl/x509v3.h>

#define SLOTS 1024 /* handshakes between TLS and CONNECT: a storm's concurrency */
#define KEEP_S 60

typedef int (*purpose_fn)(const X509_PURPOSE *, const X509 *, int);
typedef int (*trust_fn)(X509_TRUST *, X509 *, int);

struct slot {
    X509 *leaf; /* a reference: its address cannot be reused while here */
    X509 *issuer;
    time_t at;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct slot slots[SLOTS];
static int watchers;
static purpose_fn original;
static trust_fn original_trust;
static time_t swept;
/* The leaf of the chain being checked on this thread, between its own
 * purpose check and its issuer's (a reference). */
static __thread X509 *pending_leaf;

static void set_pending(const X509 *x)
{
    X509 *old = pending_leaf;
    pending_leaf = x && X509_up_ref((X509 *)x) ? (X509 *)x : NULL;
    X509_free(old);
}

static struct slot *slot_of(const X509 *leaf)
{
    uint64_t h = (uint64_t)(uintptr_t)leaf * 0x9E3779B97F4A7C15ull;
    return &slots[h >> 54]; /* the top 10 bits: SLOTS is 1024 */
}

static void clear(struct slot *s)
{
    X509_free(s->leaf);
    X509_free(s->issuer);
    s->leaf = s->issuer = NULL;
}

static void record(const X509 *leaf, const X509 *issuer)
{
    X509 *l = (X509 *)leaf, *i = (X509 *)issuer;
    if (!X509_up_ref(l))
        return;
    if (!X509_up_ref(i)) {
        X509_free(l);
        return;
    }
    pthread_mutex_lock(&mu);
    struct slot *s = slot_of(l);
    clear(s); /* a collision: the older handshake is checked in full */
    s->leaf = l;
    s->issuer = i;
    s->at = time(NULL);
    pthread_mutex_unlock(&mu);
}

static int watched_purpose(const X509_PURPOSE *pt, const X509 *x, int require_ca)
{
    int r = original(pt, x, require_ca);
    if (r != 1) {
        set_pending(NULL);
        return r;
    }
    if (!require_ca) {
        set_pending(x);
        return r;
    }
    X509 *leaf = pending_leaf;
    pending_leaf = NULL;
    /* The chain's second certificate names the leaf's issuer (names and
     * key identifiers): OpenSSL built the chain that way.  Checked again
     * so that nothing else is ever recorded. */
    if (leaf && X509_check_issued((X509 *)x, leaf) == X509_V_OK)
        record(leaf, x);
    X509_free(leaf);
    return r;
}

/* See the top of this file. */
static int watched_trust(X509_TRUST *t, X509 *x, int flags)
{
    int r = original_trust(t, x, flags);
    if (!(flags & X509_TRUST_NO_SS_COMPAT) || r != X509_TRUST_UNTRUSTED)
        set_pending(NULL);
    return r;
}

static X509_PURPOSE *tls_client_purpose(void)
{
    int idx = X509_PURPOSE_get_by_id(X509_PURPOSE_SSL_CLIENT);
    return idx < 0 ? NULL : X509_PURPOSE_get0(idx);
}

static X509_TRUST *tls_client_trust(void)
{
    int idx = X509_TRUST_get_by_id(X509_TRUST_SSL_CLIENT);
    return idx < 0 ? NULL : X509_TRUST_get0(idx);
}

/* Without the trust check watched, a pending leaf could be paired with
 * another chain's CA: nothing is watched then. */
int pn_handshake_watch(void)
{
    X509_PURPOSE *pt = tls_client_purpose();
    X509_TRUST *tt = tls_client_trust();
    if (!pt || !pt->check_purpose || !tt || !tt->check_trust)
        return -1;
    pthread_mutex_lock(&mu);
    if (watchers++ == 0 && pt->check_purpose != watched_purpose) {
        original = pt->check_purpose;
        original_trust = tt->check_trust;
        tt->check_trust = watched_trust;
        pt->check_purpose = watched_purpose;
    }
    pthread_mutex_unlock(&mu);
    return 0;
}

void pn_handshake_unwatch(void)
{
    X509_PURPOSE *pt = tls_client_purpose();
    X509_TRUST *tt = tls_client_trust();
    pthread_mutex_lock(&mu);
    if (watchers > 0 && --watchers == 0) {
        if (pt && pt->check_purpose == watched_purpose)
            pt->check_purpose = original;
        if (tt && tt->check_trust == watched_trust)
            tt->check_trust = original_trust;
        set_pending(NULL);
        for (size_t i = 0; i < SLOTS; i++)
            clear(&slots[i]);
    }
    pthread_mutex_unlock(&mu);
}

X509 *pn_handshake_issuer(X509 *leaf)
{
    X509 *issuer = NULL;
    if (!leaf)
        return NULL;
    pthread_mutex_lock(&mu);
    struct slot *s = slot_of(leaf);
    if (s->leaf == leaf) {
        issuer = s->issuer;
        s->issuer = NULL;
        clear(s);
    }
    pthread_mutex_unlock(&mu);
    return issuer;
}

void pn_handshake_expire(time_t now)
{
    if (now == swept)
        return;
    swept = now;
    pthread_mutex_lock(&mu);
    for (size_t i = 0; i < SLOTS; i++)
        if (slots[i].leaf && now - slots[i].at > KEEP_S)
            clear(&slots[i]);
    pthread_mutex_unlock(&mu);
}
