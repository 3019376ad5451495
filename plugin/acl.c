/* SPDX-License-Identifier: Apache-2.0 */
/* What a connected client may publish, subscribe to and receive.  Devices
 * get R/<id>/down/# to read and R/<id>/up/# to write, nothing else;
 * service identities get all of R/# and may read $SYS/#.  Decided from the username the plugin
 * set at CONNECT plus the in-memory state, so it also works for offline
 * durable sessions, which have no certificate. */
#include <string.h>

#include "ident.h"
#include "policy.h"

/* True when topic is `prefix` itself or lies below it ("prefix/..."). */
static bool under(const char *topic, const char *prefix, size_t plen)
{
    return strncmp(topic, prefix, plen) == 0 && (topic[plen] == '\0' || topic[plen] == '/');
}

/* True when topic is R/<id>/<leaf> or below it. */
static bool in_device_tree(const char *topic, const char *root, const char *id, const char *leaf)
{
    size_t rl = strlen(root), il = strlen(id), ll = strlen(leaf);
    if (strncmp(topic, root, rl) != 0 || topic[rl] != '/')
        return false;
    topic += rl + 1;
    if (strncmp(topic, id, il) != 0 || topic[il] != '/')
        return false;
    topic += il + 1;
    return under(topic, leaf, ll);
}

static bool service_allows(const struct pn_state *s, const char *root, const char *name,
                           const char *topic, int access)
{
    const struct pn_service *sv = pn_map_get(s->services_by_name, name, strlen(name));
    if (!sv || sv->status != PN_ACTIVE)
        return false;
    if (access == PN_ACL_UNSUBSCRIBE)
        return true;
    if (access == PN_ACL_SUBSCRIBE && strncmp(topic, "$share/", 7) == 0) {
        /* $share/<group>/<filter>: judge the filter. */
        const char *f = strchr(topic + 7, '/');
        if (!f)
            return false;
        topic = f + 1;
    }
    /* The broker's $SYS tree (Mosquitto's and $SYS/broker/pinion/...) is
     * for monitoring: services may read it, never publish into it. */
    if (under(topic, "$SYS", 4))
        return access == PN_ACL_SUBSCRIBE || access == PN_ACL_READ;
    size_t rl = strlen(root);
    return strncmp(topic, root, rl) == 0 && topic[rl] == '/';
}

bool pn_acl_allows(const struct pn_state *s, const char *topic_root, const char *username,
                   const char *client_id, const char *topic, int access)
{
    if (!username || !topic)
        return false;
    size_t sp = strlen(PN_SERVICE_USER_PREFIX);
    if (strncmp(username, PN_SERVICE_USER_PREFIX, sp) == 0)
        return service_allows(s, topic_root, username + sp, topic, access);

    /* A device: its username is its identifier, which must also be its
     * client id (bound at CONNECT) and still be an active device. */
    if (!pn_ident_valid(username) || !client_id || strcmp(username, client_id) != 0 ||
        pn_ident_reserved(username))
        return false;
    const struct pn_device *d = pn_map_get(s->devices, username, strlen(username));
    if (!d || d->status != PN_ACTIVE)
        return false;
    switch (access) {
    case PN_ACL_UNSUBSCRIBE:
        return true;
    case PN_ACL_SUBSCRIBE:
    case PN_ACL_READ:
        return in_device_tree(topic, topic_root, username, "down");
    case PN_ACL_WRITE:
        return in_device_tree(topic, topic_root, username, "up");
    default:
        return false;
    }
}
