/* SPDX-License-Identifier: Apache-2.0 */
/* meta.conf: fwup's metadata and resource declarations, parsed with
 * libconfuse as fwup does (fw.h). */
#include "fw_internal.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <confuse.h>
#include <jansson.h>
#include <sodium.h>

/* Section layout of fwup 1.16's meta.conf.  Only the options Pinion reads
 * are typed; "__unknown" makes libconfuse (CFGF_IGNORE_UNKNOWN) skip every
 * other option, as fwup does.  The sections themselves must be declared:
 * libconfuse 3.3 cannot skip an unknown section reliably.  No function is
 * declared (fwup's include()/define() are creation-time only), so include
 * directives in an archive are ignored rather than read from this host. */
#define UNKNOWN CFG_STR("__unknown", 0, CFGF_NONE)

static cfg_opt_t file_resource_opts[] = {CFG_INT_LIST("length", 0, CFGF_NONE),
                                         CFG_STR("blake2b-256", 0, CFGF_NONE),
                                         CFG_STR("sha256", 0, CFGF_NONE), UNKNOWN, CFG_END()};
static cfg_opt_t partition_opts[] = {UNKNOWN, CFG_END()};
static cfg_opt_t osii_opts[] = {UNKNOWN, CFG_END()};
static cfg_opt_t mbr_opts[] = {
    CFG_SEC("partition", partition_opts, CFGF_MULTI | CFGF_TITLE | CFGF_NO_TITLE_DUPES),
    CFG_SEC("osii", osii_opts, CFGF_MULTI | CFGF_TITLE | CFGF_NO_TITLE_DUPES), UNKNOWN, CFG_END()};
static cfg_opt_t gpt_partition_opts[] = {UNKNOWN, CFG_END()};
static cfg_opt_t gpt_opts[] = {
    CFG_SEC("partition", gpt_partition_opts, CFGF_MULTI | CFGF_TITLE | CFGF_NO_TITLE_DUPES),
    UNKNOWN, CFG_END()};
static cfg_opt_t uboot_opts[] = {UNKNOWN, CFG_END()};
static cfg_opt_t event_opts[] = {CFG_STR_LIST("funlist", 0, CFGF_NONE), UNKNOWN, CFG_END()};
static cfg_opt_t on_init_opts[] = {CFG_STR_LIST("funlist", 0, CFGF_NONE), UNKNOWN, CFG_END()};
static cfg_opt_t on_finish_opts[] = {CFG_STR_LIST("funlist", 0, CFGF_NONE), UNKNOWN, CFG_END()};
static cfg_opt_t on_error_opts[] = {CFG_STR_LIST("funlist", 0, CFGF_NONE), UNKNOWN, CFG_END()};
static cfg_opt_t task_opts[] = {
    CFG_STR_LIST("reqlist", 0, CFGF_NONE),
    CFG_SEC("on-init", on_init_opts, CFGF_NONE),
    CFG_SEC("on-finish", on_finish_opts, CFGF_NONE),
    CFG_SEC("on-error", on_error_opts, CFGF_NONE),
    CFG_SEC("on-resource", event_opts, CFGF_MULTI | CFGF_TITLE | CFGF_NO_TITLE_DUPES),
    UNKNOWN,
    CFG_END()};
static cfg_opt_t meta_opts[] = {
    CFG_STR("meta-product", 0, CFGF_NONE),
    CFG_STR("meta-description", 0, CFGF_NONE),
    CFG_STR("meta-version", 0, CFGF_NONE),
    CFG_STR("meta-author", 0, CFGF_NONE),
    CFG_STR("meta-platform", 0, CFGF_NONE),
    CFG_STR("meta-architecture", 0, CFGF_NONE),
    CFG_STR("meta-vcs-identifier", 0, CFGF_NONE),
    CFG_STR("meta-misc", 0, CFGF_NONE),
    CFG_SEC("file-resource", file_resource_opts, CFGF_MULTI | CFGF_TITLE | CFGF_NO_TITLE_DUPES),
    CFG_SEC("mbr", mbr_opts, CFGF_MULTI | CFGF_TITLE | CFGF_NO_TITLE_DUPES),
    CFG_SEC("gpt", gpt_opts, CFGF_MULTI | CFGF_TITLE | CFGF_NO_TITLE_DUPES),
    CFG_SEC("task", task_opts, CFGF_MULTI | CFGF_TITLE | CFGF_NO_TITLE_DUPES),
    CFG_SEC("uboot-environment", uboot_opts, CFGF_MULTI | CFGF_TITLE | CFGF_NO_TITLE_DUPES),
    UNKNOWN,
    CFG_END()};

void pn_fw_resources_free(struct resource *r, size_t n)
{
    for (size_t i = 0; r && i < n; i++)
        free(r[i].name);
    free(r);
}

/* libconfuse reports parse errors through this; they end up as one
 * sentence built from the line number, not on stderr. */
static void quiet_cfg_error(cfg_t *cfg, const char *fmt, va_list ap)
{
    (void)cfg;
    (void)fmt;
    (void)ap;
}

/* "${" reaches libconfuse's environment expansion unless its '$' is
 * escaped by an odd number of backslashes. */
static int refers_to_env(const char *s, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (s[i] != '$' || s[i + 1] != '{')
            continue;
        size_t bs = 0;
        while (bs < i && s[i - 1 - bs] == '\\')
            bs++;
        if (bs % 2 == 0)
            return 1;
    }
    return 0;
}

static int parse_digest(const char *hexstr, unsigned char out[32])
{
    if (!hexstr || strlen(hexstr) != 64)
        return -1;
    for (const char *p = hexstr; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return -1; /* fwup compares lowercase hex text */
    size_t n = 0;
    if (sodium_hex2bin(out, 32, hexstr, 64, NULL, &n, NULL) != 0 || n != 32)
        return -1;
    return 0;
}

/* Reads one file-resource section into r.  fwup's length is a list: one
 * value, or a sparse map alternating data and hole sizes, of which only
 * the data parts are stored. */
static int resource_read(cfg_t *sec, struct resource *r, struct pn_err *err)
{
    char pname[128];
    const char *title = cfg_title(sec);
    if (!title || !pn_fw_name_safe(title))
        return pn_err_set(err, "meta.conf declares a resource with an unsafe name '%s'",
                          pn_fw_printable(title ? title : "", pname, sizeof(pname)));
    r->name = strdup(title);
    if (!r->name)
        return pn_err_set(err, "out of memory");
    uint64_t total = 0;
    unsigned n = cfg_size(sec, "length");
    for (unsigned i = 0; i < n; i++) {
        long v = cfg_getnint(sec, "length", i);
        if (v < 0)
            return pn_err_set(err, "meta.conf: resource %s has a negative length", title);
        if (i % 2 == 0) {
            if ((uint64_t)v > (uint64_t)INT64_MAX - total)
                return pn_err_set(err, "meta.conf: resource %s has an impossible length", title);
            total += (uint64_t)v;
        }
    }
    r->length = total;
    const char *b2 = cfg_getstr(sec, "blake2b-256");
    const char *s2 = cfg_getstr(sec, "sha256");
    if (b2) {
        r->kind = HASH_BLAKE2B;
        if (parse_digest(b2, r->digest) < 0)
            return pn_err_set(err, "meta.conf: resource %s has a malformed blake2b-256", title);
    } else if (s2) {
        r->kind = HASH_SHA256;
        if (parse_digest(s2, r->digest) < 0)
            return pn_err_set(err, "meta.conf: resource %s has a malformed sha256", title);
    } else {
        return pn_err_set(err, "meta.conf: resource %s has no blake2b-256 (or sha256)", title);
    }
    return 0;
}

/* Parses meta.conf; fills meta and, when res is non-NULL, the resources. */
int pn_fw_meta_parse_resources(const void *buf, size_t len, struct pn_fw_meta *meta,
                               struct resource **res, size_t *nres, struct pn_err *err)
{
    memset(meta, 0, sizeof(*meta));
    if (res) {
        *res = NULL;
        *nres = 0;
    }
    if (memchr(buf, '\0', len))
        return pn_err_set(err, "meta.conf contains a NUL byte");
    if (refers_to_env(buf, len))
        return pn_err_set(err, "meta.conf refers to an environment variable (${...}), which "
                               "would expand differently on every machine");
    char *text = malloc(len + 1);
    if (!text)
        return pn_err_set(err, "out of memory");
    memcpy(text, buf, len);
    text[len] = '\0';

    int rc = -1;
    struct resource *r = NULL;
    size_t n = 0;
    cfg_t *cfg = cfg_init(meta_opts, CFGF_IGNORE_UNKNOWN);
    if (!cfg) {
        pn_err_set(err, "out of memory");
        goto out;
    }
    cfg_set_error_function(cfg, quiet_cfg_error);
    if (cfg_parse_buf(cfg, text) != CFG_SUCCESS) {
        pn_err_set(err, "meta.conf is not valid fwup syntax (near line %d)", cfg->line);
        goto out;
    }
    static const char *const keys[] = {"meta-product",        "meta-version", "meta-platform",
                                       "meta-architecture",   "meta-author",  "meta-description",
                                       "meta-vcs-identifier", "meta-misc"};
    char **fields[] = {&meta->product,        &meta->version, &meta->platform,
                       &meta->architecture,   &meta->author,  &meta->description,
                       &meta->vcs_identifier, &meta->misc};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        const char *v = cfg_getstr(cfg, keys[i]);
        /* Stored as text: refuse what is not UTF-8 here, naming the field
         * (jansson's json_string checks UTF-8). */
        json_t *utf8 = v ? json_string(v) : NULL;
        if (v && !utf8) {
            pn_err_set(err, "meta.conf field %s is not valid UTF-8", keys[i]);
            goto out;
        }
        json_decref(utf8);
        if (!(*fields[i] = pn_fw_strdup(v))) {
            pn_err_set(err, "out of memory");
            goto out;
        }
    }
    n = cfg_size(cfg, "file-resource");
    meta->nresources = n;
    if (res) {
        r = calloc(n ? n : 1, sizeof(*r));
        if (!r) {
            pn_err_set(err, "out of memory");
            goto out;
        }
        for (size_t i = 0; i < n; i++)
            if (resource_read(cfg_getnsec(cfg, "file-resource", (unsigned)i), &r[i], err) < 0)
                goto out;
    }
    pn_fw_uuid(buf, len, meta->uuid);
    rc = 0;
out:
    if (cfg)
        cfg_free(cfg);
    free(text);
    if (rc < 0) {
        pn_fw_resources_free(r, n);
        pn_fw_meta_free(meta);
    } else if (res) {
        *res = r;
        *nres = n;
    }
    return rc;
}

int pn_fw_meta_parse(const void *meta_conf, size_t len, struct pn_fw_meta *meta, struct pn_err *err)
{
    return pn_fw_meta_parse_resources(meta_conf, len, meta, NULL, NULL, err);
}

void pn_fw_meta_free(struct pn_fw_meta *meta)
{
    free(meta->product);
    free(meta->version);
    free(meta->platform);
    free(meta->architecture);
    free(meta->author);
    free(meta->description);
    free(meta->vcs_identifier);
    free(meta->misc);
    memset(meta, 0, sizeof(*meta));
}
