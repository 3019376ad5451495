/* SPDX-License-Identifier: Apache-2.0 */
/* piniond's configuration file (service/config.c, pd_config_load): a
 * config that loads holds every required setting, within its range. */
#include "fuzz.h"
#include "ident.h"
#include "piniond.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct pd_config cfg;
    struct pn_err err;
    if (pd_config_load(fuzz_mem_path(0, data, size), &cfg, &err) == 0) {
        FUZZ_ASSERT(cfg.database && cfg.ca_file && cfg.cert_file && cfg.key_file &&
                    cfg.release_key && cfg.mqtt_host);
        FUZZ_ASSERT(pn_topic_root_valid(cfg.topic_root) && pn_ident_valid(cfg.client_id));
        FUZZ_ASSERT(cfg.mqtt_port >= 1 && cfg.mqtt_port <= 65535);
        FUZZ_ASSERT(cfg.tick_ms >= 10 && cfg.tick_ms <= 60000);
        FUZZ_ASSERT(cfg.chunk_max >= 1024 && cfg.chunk_max <= 1048576);
        pd_config_free(&cfg);
    } else {
        fuzz_one_line(err.msg);
    }
    return 0;
}
