/* piniond's configuration file, in the same libconfuse syntax as fwup's
 * meta.conf ("key = value", strings quoted).  See README "piniond". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <confuse.h>

#include "piniond.h"

static char *dup_opt(cfg_t *c, const char *k)
{
    const char *v = cfg_getstr(c, k);
    return v ? strdup(v) : NULL;
}

int pd_config_load(const char *path, struct pd_config *cfg, struct pn_err *err)
{
    cfg_opt_t opts[] = {
        CFG_STR("database", NULL, CFGF_NONE),       CFG_STR("mqtt_host", "127.0.0.1", CFGF_NONE),
        CFG_INT("mqtt_port", 8883, CFGF_NONE),      CFG_STR("ca_file", NULL, CFGF_NONE),
        CFG_STR("cert_file", NULL, CFGF_NONE),      CFG_STR("key_file", NULL, CFGF_NONE),
        CFG_STR("client_id", "piniond", CFGF_NONE), CFG_STR("topic_root", "fleet", CFGF_NONE),
        CFG_STR("release_key", NULL, CFGF_NONE),    CFG_STR("artifacts", NULL, CFGF_NONE),
        CFG_INT("verify_ttl", 60, CFGF_NONE),       CFG_INT("manifest_ttl", 86400, CFGF_NONE),
        CFG_INT("chunk_max", 65536, CFGF_NONE),     CFG_INT("penalty", 300, CFGF_NONE),
        CFG_INT("max_attempts", 3, CFGF_NONE),      CFG_INT("tick_ms", 500, CFGF_NONE),
        CFG_STR("cdn_url", NULL, CFGF_NONE),
        CFG_END()};
    memset(cfg, 0, sizeof(*cfg));
    cfg_t *c = cfg_init(opts, CFGF_NONE);
    if (!c)
        return pn_err_set(err, "out of memory");
    /* libconfuse prints its own parse errors; keep ours to one line. */
    cfg_set_error_function(c, NULL);
    int r = cfg_parse(c, path);
    if (r == CFG_FILE_ERROR) {
        cfg_free(c);
        return pn_err_set(err, "%s: cannot read the configuration file", path);
    }
    if (r != CFG_SUCCESS) {
        cfg_free(c);
        return pn_err_set(err, "%s: syntax error or unknown setting", path);
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
    cfg->mqtt_port = (int)cfg_getint(c, "mqtt_port");
    cfg->verify_ttl = (int)cfg_getint(c, "verify_ttl");
    cfg->manifest_ttl = (int)cfg_getint(c, "manifest_ttl");
    cfg->chunk_max = (int)cfg_getint(c, "chunk_max");
    cfg->penalty = (int)cfg_getint(c, "penalty");
    cfg->max_attempts = (int)cfg_getint(c, "max_attempts");
    cfg->tick_ms = (int)cfg_getint(c, "tick_ms");
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
    if (cfg->mqtt_port < 1 || cfg->mqtt_port > 65535 || cfg->verify_ttl < 0 ||
        cfg->manifest_ttl < 60 || cfg->chunk_max < 1024 || cfg->chunk_max > 1048576 ||
        cfg->penalty < 0 || cfg->max_attempts < 1 || cfg->tick_ms < 10) {
        pd_config_free(cfg);
        return pn_err_set(err, "%s: a numeric setting is out of range (mqtt_port 1-65535, "
                               "manifest_ttl >= 60, chunk_max 1024-1048576, max_attempts >= 1, "
                               "tick_ms >= 10)", path);
    }
    return 0;
}

void pd_config_free(struct pd_config *cfg)
{
    free(cfg->database);
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
