/* SPDX-License-Identifier: Apache-2.0 */
/* A Mosquitto plugin that allows every publish and subscription: the
 * baseline of bench/msg_throughput.sh for what any ACL plugin costs the
 * broker (it then asks the plugin for every message), apart from what
 * Pinion's own check costs. */
#include <stddef.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

static mosquitto_plugin_id_t *plugin_id;

static int allow(int event, void *event_data, void *userdata)
{
    (void)event;
    (void)event_data;
    (void)userdata;
    return MOSQ_ERR_SUCCESS;
}

__attribute__((visibility("default"))) int mosquitto_plugin_version(int count, const int *versions)
{
    for (int i = 0; i < count; i++)
        if (versions[i] == 5)
            return 5;
    return -1;
}

__attribute__((visibility("default"))) int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier,
                                                                 void **userdata,
                                                                 struct mosquitto_opt *opts,
                                                                 int opt_count)
{
    (void)userdata;
    (void)opts;
    (void)opt_count;
    plugin_id = identifier;
    return mosquitto_callback_register(plugin_id, MOSQ_EVT_ACL_CHECK, allow, NULL, NULL);
}

__attribute__((visibility("default"))) int
mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *opts, int opt_count)
{
    (void)userdata;
    (void)opts;
    (void)opt_count;
    return mosquitto_callback_unregister(plugin_id, MOSQ_EVT_ACL_CHECK, allow, NULL);
}
