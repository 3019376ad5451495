#include "map.h"

#include <stdlib.h>
#include <string.h>

#include <sodium.h>

struct slot {
    uint64_t hash; /* 0 = empty, 1 = deleted (tombstone); real hashes are >= 2 */
    void *val;
};

struct pn_map {
    struct slot *slots;
    pn_map_key_fn key_of;
    size_t cap; /* power of two */
    size_t count, used; /* used = count + tombstones */
    unsigned char seed[crypto_shorthash_KEYBYTES];
};

static uint64_t hash_key(const struct pn_map *m, const void *key, size_t klen)
{
    unsigned char out[crypto_shorthash_BYTES];
    uint64_t h;
    crypto_shorthash(out, key, klen, m->seed);
    memcpy(&h, out, sizeof(h));
    return h < 2 ? h + 2 : h;
}

struct pn_map *pn_map_new(size_t hint, pn_map_key_fn key_of)
{
    struct pn_map *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    size_t cap = 16;
    while (cap < hint * 2)
        cap <<= 1;
    m->slots = calloc(cap, sizeof(*m->slots));
    if (!m->slots) {
        free(m);
        return NULL;
    }
    m->cap = cap;
    m->key_of = key_of;
    randombytes_buf(m->seed, sizeof(m->seed));
    return m;
}

void pn_map_free(struct pn_map *m)
{
    if (!m)
        return;
    free(m->slots);
    free(m);
}

static struct slot *find(const struct pn_map *m, uint64_t h, const void *key, size_t klen)
{
    size_t mask = m->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        struct slot *s = &m->slots[i];
        if (s->hash == 0)
            return NULL;
        if (s->hash != h)
            continue;
        size_t sl;
        const void *sk = m->key_of(s->val, &sl);
        if (sl == klen && memcmp(sk, key, klen) == 0)
            return s;
    }
}

void *pn_map_get(const struct pn_map *m, const void *key, size_t klen)
{
    struct slot *s = find(m, hash_key(m, key, klen), key, klen);
    return s ? s->val : NULL;
}

static int grow(struct pn_map *m)
{
    size_t ncap = m->count * 4 > m->cap ? m->cap * 2 : m->cap; /* else just purge tombstones */
    struct slot *ns = calloc(ncap, sizeof(*ns));
    if (!ns)
        return -1;
    for (size_t i = 0; i < m->cap; i++) {
        struct slot *s = &m->slots[i];
        if (s->hash < 2)
            continue;
        size_t j = s->hash & (ncap - 1);
        while (ns[j].hash)
            j = (j + 1) & (ncap - 1);
        ns[j] = *s;
    }
    free(m->slots);
    m->slots = ns;
    m->cap = ncap;
    m->used = m->count;
    return 0;
}

void *pn_map_put(struct pn_map *m, void *val, int *err)
{
    size_t klen;
    const void *key = m->key_of(val, &klen);
    uint64_t h = hash_key(m, key, klen);
    struct slot *s = find(m, h, key, klen);
    if (err)
        *err = 0;
    if (s) {
        void *old = s->val;
        s->val = val;
        return old;
    }
    if ((m->used + 1) * 4 > m->cap * 3 && grow(m) < 0) {
        if (err)
            *err = -1;
        return NULL;
    }
    size_t mask = m->cap - 1, i = h & mask;
    while (m->slots[i].hash >= 2)
        i = (i + 1) & mask;
    if (m->slots[i].hash == 0)
        m->used++;
    m->slots[i] = (struct slot){h, val};
    m->count++;
    return NULL;
}

void *pn_map_del(struct pn_map *m, const void *key, size_t klen)
{
    struct slot *s = find(m, hash_key(m, key, klen), key, klen);
    if (!s)
        return NULL;
    void *v = s->val;
    s->hash = 1;
    s->val = NULL;
    m->count--;
    return v;
}

size_t pn_map_count(const struct pn_map *m)
{
    return m->count;
}

int pn_map_next(const struct pn_map *m, size_t *pos, void **val)
{
    while (*pos < m->cap) {
        struct slot *s = &m->slots[(*pos)++];
        if (s->hash >= 2) {
            if (val)
                *val = s->val;
            return 1;
        }
    }
    return 0;
}

size_t pn_map_bytes(const struct pn_map *m)
{
    return sizeof(*m) + m->cap * sizeof(struct slot);
}
