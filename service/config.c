/* SPDX-License-Identifier: Apache-2.0 */
/* piniond's configuration file, in the same libconfuse syntax as fwup's
 * meta.conf ("key = value", strings quoted).  See README "piniond". */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <confuse.h>

#include "ident.h"
#include "piniond.h"

/* libconfuse reports through a callback with no user pointer; the first
 * message of a parse is kept here (piniond parses once, before any thread). */
static char parse_msg[256];

static void keep_first_error(cfg_t *c, const char *fmt, va_list ap)
{
    if (parse_msg[0])
        return;
    char msg[200];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    if (c && c->line > 0)
        snprintf(parse_msg, sizeof(parse_msg), "line %d: %s", c->line, msg);
    else
        snprintf(parse_msg, sizeof(parse_msg), "%s", msg);
}

struct int_range {
    const char *key;
    long min, max;
};

static const struct int_range int_ranges[] = {
    {"mqtt_port", 1, 65535},
    {"verify_ttl", 0, 86400},
    {"manifest_ttl", 60, 31536000},
    {"chunk_max", 1024, 1048576},
    {"penalty", 0, 31536000},
    {"max_attempts", 1, 1000},
    {"tick_ms", 10, 60000},
    {"inflight_timeout", 1, 31536000},
    {"device_get_rate", 1, 1000000},
    {"device_get_burst", 1, 1000000},
    {"device_status_rate", 1, 1000000},
    {"device_status_burst", 1, 1000000},
    {"limit_log_period", 1, 86400},
    {"inflight_cache_ms", 0, 60000},
};

static char *dup_opt(cfg_t *c, const char *k)
{
    const char *v = cfg_getstr(c, k);
    return v ? strdup(v) : NULL;
}

int pd_config_load(const char *path, struct pd_config *cfg, struct pn_err *err)
{
    cfg_opt_t opts[] = {
        CFG_STR("database", NULL, CFGF_NONE), CFG_STR("mqtt_host", "127.0.0.1", CFGF_NONE),
        CFG_INT("mqtt_port", 8883, CFGF_NONE), CFG_STR("ca_file", NULL, CFGF_NONE),
        CFG_STR("cert_file", NULL, CFGF_NONE), CFG_STR("key_file", NULL, CFGF_NONE),
        CFG_STR("client_id", "piniond", CFGF_NONE), CFG_STR("topic_root", "fleet", CFGF_NONE),
        CFG_STR("release_key", NULL, CFGF_NONE), CFG_STR("artifacts", NULL, CFGF_NONE),
        CFG_INT("verify_ttl", 60, CFGF_NONE), CFG_INT("manifest_ttl", 86400, CFGF_NONE),
        CFG_INT("chunk_max", 65536, CFGF_NONE), CFG_INT("penalty", 300, CFGF_NONE),
        CFG_INT("max_attempts", 3, CFGF_NONE), CFG_INT("tick_ms", 500, CFGF_NONE),
        CFG_STR("cdn_url", NULL, CFGF_NONE), CFG_INT("inflight_timeout", 3600, CFGF_NONE),
        /* Per device: a request/response download on a fast link stays
         * under 1,000 requests a second; a device sends a few statuses an
         * update (a failing one ~20 within seconds). */
        CFG_INT("device_get_rate", 1000, CFGF_NONE), CFG_INT("device_get_burst", 5000, CFGF_NONE),
        CFG_INT("device_status_rate", 2, CFGF_NONE), CFG_INT("device_status_burst", 30, CFGF_NONE),
        CFG_INT("limit_log_period", 10, CFGF_NONE), CFG_INT("inflight_cache_ms", 2000, CFGF_NONE),
        CFG_STR("metrics_listen", NULL, CFGF_NONE), CFG_END()};
    memset(cfg, 0, sizeof(*cfg));
    cfg_t *c = cfg_init(opts, CFGF_NONE);
    if (!c)
        return pn_err_set(err, "out of memory");
    /* libconfuse would print its own errors; keep ours to one line. */
    parse_msg[0] = '\0';
    cfg_set_error_function(c, keep_first_error);
    int r = cfg_parse(c, path);
    if (r == CFG_FILE_ERROR) {
        cfg_free(c);
        return pn_err_set(err, "%s: cannot read the configuration file", path);
    }
    if (r != CFG_SUCCESS) {
        cfg_free(c);
        return pn_err_set(err, "%s: %s", path, parse_msg[0] ? parse_msg : "syntax error");
    }
    for (size_t i = 0; i < sizeof(int_ranges) / sizeof(int_ranges[0]); i++) {
        long v = cfg_getint(c, int_ranges[i].key);
        if (v < int_ranges[i].min || v > int_ranges[i].max) {
            pn_err_set(err, "%s: %s = %ld is out of range (%ld-%ld)", path, int_ranges[i].key, v,
                       int_ranges[i].min, int_ranges[i].max);
            cfg_free(c);
            return -1;
        }
    }
    cfg->database = dup_opt(c, "database");
    cfg->mqtt_host = dup_opt(c, "mqtt_host");
    cfg->ca_file = dup_opt(c, "ca_file");
    cfg->cert_file = dup_opt(c, "cert_file");
    cfg->key_file = dup_opt(c, "key_file");
    cfg->client_id = dup_opt(c, "client_id");
    cfg->topic_root = dup_opt(c, "topic_root");
    cfg->release_key = dup_opt(c, "release_key");
    cfg->artifacts = dup_opt(c, "artifacts");
    cfg->cdn_url = dup_opt(c, "cdn_url");
    cfg->metrics_listen = dup_opt(c, "metrics_listen");
    cfg->mqtt_port = (int)cfg_getint(c, "mqtt_port");
    cfg->verify_ttl = (int)cfg_getint(c, "verify_ttl");
    cfg->manifest_ttl = (int)cfg_getint(c, "manifest_ttl");
    cfg->chunk_max = (int)cfg_getint(c, "chunk_max");
    cfg->penalty = (int)cfg_getint(c, "penalty");
    cfg->max_attempts = (int)cfg_getint(c, "max_attempts");
    cfg->tick_ms = (int)cfg_getint(c, "tick_ms");
    cfg->inflight_timeout = (int)cfg_getint(c, "inflight_timeout");
    cfg->get_rate = (int)cfg_getint(c, "device_get_rate");
    cfg->get_burst = (int)cfg_getint(c, "device_get_burst");
    cfg->status_rate = (int)cfg_getint(c, "device_status_rate");
    cfg->status_burst = (int)cfg_getint(c, "device_status_burst");
    cfg->limit_log_period = (int)cfg_getint(c, "limit_log_period");
    cfg->inflight_cache_ms = (int)cfg_getint(c, "inflight_cache_ms");
    cfg_free(c);

    const char *missing = !cfg->database      ? "database"
                          : !cfg->ca_file     ? "ca_file"
                          : !cfg->cert_file   ? "cert_file"
                          : !cfg->key_file    ? "key_file"
                          : !cfg->release_key ? "release_key"
                                              : NULL;
    if (missing) {
        pd_config_free(cfg);
        return pn_err_set(err, "%s: '%s' is required", path, missing);
    }
    if (!pn_topic_root_valid(cfg->topic_root)) {
        pn_err_set(err,
                   "%s: topic_root '%s' is not one or more '/'-separated levels of "
                   "[A-Za-z0-9._-]",
                   path, cfg->topic_root);
        pd_config_free(cfg);
        return -1;
    }
    if (cfg->cdn_url &&
        ((strncmp(cfg->cdn_url, "https://", 8) != 0 && strncmp(cfg->cdn_url, "http://", 7) != 0) ||
         strpbrk(cfg->cdn_url, " \t\r\n\"<>\\"))) {
        pn_err_set(err, "%s: cdn_url '%s' is not an http(s):// URL", path, cfg->cdn_url);
        pd_config_free(cfg);
        return -1;
    }
    if (!pn_ident_valid(cfg->client_id)) {
        pn_err_set(err, "%s: client_id '%s' is not [A-Za-z0-9._:-]{1,128}", path, cfg->client_id);
        pd_config_free(cfg);
        return -1;
    }
    return 0;
}

void pd_config_free(struct pd_config *cfg)
{
    free(cfg->database);
    free(cfg->metrics_listen);
    free(cfg->mqtt_host);
    free(cfg->ca_file);
    free(cfg->cert_file);
    free(cfg->key_file);
    free(cfg->client_id);
    free(cfg->topic_root);
    free(cfg->release_key);
    free(cfg->artifacts);
    free(cfg->cdn_url);
    memset(cfg, 0, sizeof(*cfg));
}
