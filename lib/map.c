/* SPDX-License-Identifier: Apache-2.0 */
#include "map.h"

#include <stdlib.h>
#include <string.h>

#include <sodium.h>

/* Two parallel arrays rather than one of {hash, value} slots: 12 bytes a
 * slot instead of 16, and a probe reads 4-byte tags, several to a cache
 * line.  The capacity is not a power of two (a slot is found by
 * multiplying the hash by it), so a table sized for N entries takes 4/3 N
 * slots rather than the next power of two above 2 N: with a million pins
 * the three big maps of the plugin take 48 bytes a device instead of 100. */
struct pn_map {
    uint32_t *tags; /* 0 = empty, 1 = deleted (tombstone), else tag_of(hash) */
    void **vals;
    pn_map_key_fn key_of;
    size_t cap;
    size_t count, used; /* used = count + tombstones */
    unsigned char seed[crypto_shorthash_KEYBYTES];
};

static uint64_t hash_key(const struct pn_map *m, const void *key, size_t klen)
{
    unsigned char out[crypto_shorthash_BYTES];
    uint64_t h;
    crypto_shorthash(out, key, klen, m->seed);
    memcpy(&h, out, sizeof(h));
    return h;
}

/* The home slot comes from the hash's high bits, the tag from its low ones. */
static size_t home(size_t cap, uint64_t h)
{
    return (size_t)(((unsigned __int128)h * cap) >> 64);
}

static uint32_t tag_of(uint64_t h)
{
    uint32_t t = (uint32_t)h;
    return t < 2 ? t + 2 : t;
}

/* At most 3/4 full. */
static size_t cap_for(size_t entries)
{
    size_t cap = entries + entries / 3 + 1;
    return cap < 16 ? 16 : cap;
}

static int alloc_slots(size_t cap, uint32_t **tags, void ***vals)
{
    *tags = calloc(cap, sizeof(**tags));
    *vals = calloc(cap, sizeof(**vals));
    if (*tags && *vals)
        return 0;
    free(*tags);
    free(*vals);
    return -1;
}

struct pn_map *pn_map_new(size_t hint, pn_map_key_fn key_of)
{
    struct pn_map *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->cap = cap_for(hint);
    if (alloc_slots(m->cap, &m->tags, &m->vals) < 0) {
        free(m);
        return NULL;
    }
    m->key_of = key_of;
    randombytes_buf(m->seed, sizeof(m->seed));
    return m;
}

void pn_map_free(struct pn_map *m)
{
    if (!m)
        return;
    free(m->tags);
    free(m->vals);
    free(m);
}

/* Index of the slot holding key, or cap when absent. */
static size_t find(const struct pn_map *m, uint64_t h, const void *key, size_t klen)
{
    uint32_t tag = tag_of(h);
    for (size_t i = home(m->cap, h);; i = i + 1 == m->cap ? 0 : i + 1) {
        uint32_t t = m->tags[i];
        if (t == 0)
            return m->cap;
        if (t != tag)
            continue;
        size_t sl;
        const void *sk = m->key_of(m->vals[i], &sl);
        if (sl == klen && memcmp(sk, key, klen) == 0)
            return i;
    }
}

void *pn_map_get(const struct pn_map *m, const void *key, size_t klen)
{
    size_t i = find(m, hash_key(m, key, klen), key, klen);
    return i < m->cap ? m->vals[i] : NULL;
}

/* Rehashes into a table twice as large, or as large when tombstones were
 * most of the load. */
static int grow(struct pn_map *m)
{
    size_t ncap = m->count * 2 > m->cap ? m->cap * 2 : m->cap;
    uint32_t *nt;
    void **nv;
    if (alloc_slots(ncap, &nt, &nv) < 0)
        return -1;
    for (size_t i = 0; i < m->cap; i++) {
        if (m->tags[i] < 2)
            continue;
        size_t klen;
        const void *key = m->key_of(m->vals[i], &klen);
        size_t j = home(ncap, hash_key(m, key, klen));
        while (nt[j])
            j = j + 1 == ncap ? 0 : j + 1;
        nt[j] = m->tags[i];
        nv[j] = m->vals[i];
    }
    free(m->tags);
    free(m->vals);
    m->tags = nt;
    m->vals = nv;
    m->cap = ncap;
    m->used = m->count;
    return 0;
}

void *pn_map_put(struct pn_map *m, void *val, int *err)
{
    size_t klen;
    const void *key = m->key_of(val, &klen);
    uint64_t h = hash_key(m, key, klen);
    size_t i = find(m, h, key, klen);
    if (err)
        *err = 0;
    if (i < m->cap) {
        void *old = m->vals[i];
        m->vals[i] = val;
        return old;
    }
    if ((m->used + 1) * 4 > m->cap * 3 && grow(m) < 0) {
        if (err)
            *err = -1;
        return NULL;
    }
    for (i = home(m->cap, h); m->tags[i] >= 2; i = i + 1 == m->cap ? 0 : i + 1)
        ;
    if (m->tags[i] == 0)
        m->used++;
    m->tags[i] = tag_of(h);
    m->vals[i] = val;
    m->count++;
    return NULL;
}

void *pn_map_del(struct pn_map *m, const void *key, size_t klen)
{
    size_t i = find(m, hash_key(m, key, klen), key, klen);
    if (i == m->cap)
        return NULL;
    void *v = m->vals[i];
    m->tags[i] = 1;
    m->vals[i] = NULL;
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
        size_t i = (*pos)++;
        if (m->tags[i] >= 2) {
            if (val)
                *val = m->vals[i];
            return 1;
        }
    }
    return 0;
}

size_t pn_map_bytes(const struct pn_map *m)
{
    return sizeof(*m) + m->cap * (sizeof(*m->tags) + sizeof(*m->vals));
}
