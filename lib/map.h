/* SPDX-License-Identifier: Apache-2.0 */
/* An open-addressing hash map from byte strings to pointers, keyed with
 * SipHash (libsodium crypto_shorthash) under a per-map random key, so
 * identifiers chosen by clients cannot be used to degrade lookups.
 *
 * Every key lives inside its value: the map stores only the hash and the
 * value (12 bytes a slot) and asks key_of for the key when a hash matches.
 * A value's key must not change while the value is in the map. */
#ifndef PINION_LIB_MAP_H
#define PINION_LIB_MAP_H

#include <stddef.h>
#include <stdint.h>

struct pn_map;

/* Returns the key stored inside val and its length. */
typedef const void *(*pn_map_key_fn)(const void *val, size_t *klen);

/* New empty map, room for about `hint` entries before it grows.  NULL on
 * allocation failure. */
struct pn_map *pn_map_new(size_t hint, pn_map_key_fn key_of);
/* Frees the map, not the values. */
void pn_map_free(struct pn_map *m);

void *pn_map_get(const struct pn_map *m, const void *key, size_t klen);
/* Inserts val under its key (key_of(val)), or replaces the value with an
 * equal key; returns the previous value (or NULL).  *err is set to -1 on
 * allocation failure (the map is then unchanged). */
void *pn_map_put(struct pn_map *m, void *val, int *err);
/* Removes; returns the removed value or NULL. */
void *pn_map_del(struct pn_map *m, const void *key, size_t klen);
size_t pn_map_count(const struct pn_map *m);

/* Iteration: for (size_t i = 0; pn_map_next(m, &i, &v);) ...
 * Do not insert while iterating; deleting is allowed only after the loop
 * (collect first). */
int pn_map_next(const struct pn_map *m, size_t *pos, void **val);

/* Bytes used by the table itself (not keys or values), for benchmarks. */
size_t pn_map_bytes(const struct pn_map *m);

#endif
