/* SPDX-License-Identifier: Apache-2.0 */
/* pinion-device: the reference device client.
 *
 * What a device must do to take firmware from Pinion safely, in order:
 *   1. connect with its own certificate; client id = its identifier;
 *   2. report its firmware and state on fleet/<id>/up/status, and again
 *      every --status-every seconds (default 300) while idle: a report sent
 *      while piniond is not (yet) connected to this broker reaches no one,
 *      and piniond targets devices by the firmware they reported;
 *   3. on fleet/<id>/down/update, accept a manifest only if
 *        - its DSSE signature verifies with the release public key it embeds,
 *        - it names this device, is not expired, and its sequence is above
 *          the last one it accepted (no replay, no rollback, no freeze) —
 *          or it is, byte for byte, the manifest it accepted and has not
 *          finished (after a reboot or a lost connection mid-download),
 *        - the fwup signature of the firmware's meta.conf verifies with one of
 *          the firmware keys it embeds — before downloading a single byte;
 *   4. download the .fw in chunks over fleet/<id>/up/get -> down/chunk,
 *      resuming from what it already has;
 *   5. check the file's size and SHA-256 against the manifest, then the
 *      archive's own signature and every resource's hash;
 *   6. "install" (here: write data/image to a file), then come back
 *      reporting the new firmware.
 * Every refusal is printed as one line: "refused manifest: <reason>".
 *
 * usage: pinion-device --host H --port P --cafile CA --cert C --key K --id ID
 *          --release-key RELEASE.pub --fw-key FW.pub [--fw-key ...]
 *          --state DIR [--product P --version V --platform X --architecture Y]
 *          [--topic-root fleet] [--chunk N] [--fail-installs N] [--run-for S]
 *          [--status-every S]
 *
 * State (DIR/state.json): last accepted sequence, the SHA-256 of a manifest
 * accepted but not yet carried out, and the current firmware, so a restarted
 * device keeps refusing old manifests, resumes an unfinished download from
 * DIR/<uuid>.part, and reports what it runs. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <jansson.h>
#include <mosquitto.h>
#include <sodium.h>

#include "pinion-device.h"

#define MAX_FW_KEYS 8

struct device {
    const char *id, *root, *state_dir;
    unsigned char release_pk[32];
    struct pn_fw_key fw_keys[MAX_FW_KEYS];
    int nkeys;
    /* persistent state */
    int64_t last_sequence;
    char accepted[65]; /* SHA-256 of the accepted manifest not yet carried out, or "" */
    char uuid[64], version[64], product[128], platform[128], arch[128];
    /* the update in progress */
    bool updating;
    struct pn_manifest m;
    unsigned char uuid_bin[16]; /* m.firmware.uuid, as chunk headers carry it */
    uint64_t have;              /* bytes downloaded */
    int last_pct;               /* progress last reported */
    time_t last_request;        /* when the chunk being waited for was asked for */
    time_t last_report;
    time_t last_status; /* any status sent */
    int status_every;   /* s between status reports while idle; 0: only on changes */
    int chunk;
    int fail_installs; /* test hook: fail this many installs */
    struct mosquitto *mq;
    bool reboot; /* installed: reconnect reporting the new firmware */
};

static volatile sig_atomic_t stop;

static void on_sig(int s)
{
    (void)s;
    stop = 1;
}

static void path(const struct device *d, const char *name, char *out, size_t n)
{
    snprintf(out, n, "%s/%s", d->state_dir, name);
}

static void save_state(const struct device *d)
{
    char p[4096], tmp[4200];
    path(d, "state.json", p, sizeof(p));
    snprintf(tmp, sizeof(tmp), "%s.tmp", p);
    json_t *s = json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:s}", "last_sequence",
                          (json_int_t)d->last_sequence, "manifest_sha256", d->accepted, "uuid",
                          d->uuid, "version", d->version, "product", d->product, "platform",
                          d->platform, "architecture", d->arch);
    if (json_dump_file(s, tmp, JSON_COMPACT) == 0)
        rename(tmp, p);
    json_decref(s);
}

static void load_state(struct device *d)
{
    char p[4096];
    path(d, "state.json", p, sizeof(p));
    json_t *s = json_load_file(p, 0, NULL);
    if (!s)
        return;
    d->last_sequence = json_integer_value(json_object_get(s, "last_sequence"));
#define STR(field, key)                                                                            \
    if (json_string_value(json_object_get(s, key)))                                                \
        snprintf(d->field, sizeof(d->field), "%s", json_string_value(json_object_get(s, key)));
    STR(accepted, "manifest_sha256")
    STR(uuid, "uuid")
    STR(version, "version")
    STR(product, "product")
    STR(platform, "platform")
    STR(arch, "architecture")
#undef STR
    json_decref(s);
}

static void report(struct device *d, const char *state, int progress, const char *reason)
{
    char topic[256];
    snprintf(topic, sizeof(topic), "%s/%s/up/status", d->root, d->id);
    json_t *j = json_pack("{s:{s:s, s:s, s:s, s:s, s:s}, s:s, s:i}", "firmware", "uuid", d->uuid,
                          "version", d->version, "product", d->product, "platform", d->platform,
                          "architecture", d->arch, "state", state, "progress", progress);
    if (reason)
        json_object_set_new(j, "reason", json_string(reason));
    char *s = json_dumps(j, JSON_COMPACT);
    mosquitto_publish(d->mq, NULL, topic, (int)strlen(s), s, 1, false);
    d->last_status = time(NULL);
    printf("status %s%s%s\n", state, reason ? ": " : "", reason ? reason : "");
    fflush(stdout);
    free(s);
    json_decref(j);
}

/* The update is over (installed or failed): nothing left to resume. */
static void end_update(struct device *d)
{
    d->updating = false;
    d->accepted[0] = '\0';
    save_state(d);
}

static void part_path(const struct device *d, const char *uuid, char *out, size_t n)
{
    snprintf(out, n, "%s/%s.part", d->state_dir, uuid);
}

/* The service withdrew the update (cleared manifest), or a newer manifest
 * says to stay on the running firmware: drop the download. */
static void abandon_update(struct device *d, const char *why)
{
    char part[4096];
    part_path(d, d->m.firmware.uuid, part, sizeof(part));
    unlink(part);
    end_update(d);
    printf("abandoned the download of %s %s: %s\n", d->m.firmware.product, d->m.firmware.version,
           why);
}

static int percent(uint64_t have, int64_t size)
{
    return size > 0 ? (int)(have * 100 / (uint64_t)size) : 0;
}

static void request_chunk(struct device *d)
{
    char topic[256], body[160];
    snprintf(topic, sizeof(topic), "%s/%s/up/get", d->root, d->id);
    snprintf(body, sizeof(body), "{\"uuid\":\"%s\",\"offset\":%llu,\"length\":%d}",
             d->m.firmware.uuid, (unsigned long long)d->have, d->chunk);
    mosquitto_publish(d->mq, NULL, topic, (int)strlen(body), body, 1, false);
    d->last_request = time(NULL);
}

/* No answer for a while (the service restarted, or lost its database
 * between request and answer): ask again.  A late duplicate answer is
 * ignored (its offset is no longer the one wanted). */
#define CHUNK_RETRY_S 10

static void refuse(const char *why)
{
    printf("refused manifest: %s\n", why);
    fflush(stdout);
}

static void finish(struct device *d);

/* Step 3: everything is checked before a byte of firmware is fetched. */
static void on_manifest(struct device *d, const void *payload, int len)
{
    struct pn_err err;
    struct pn_manifest m;
    if (len == 0) { /* cleared: nothing to do, or no longer */
        if (d->updating) {
            abandon_update(d, "the service withdrew it");
            report(d, "idle", 0, NULL);
        }
        return;
    }
    if (pn_manifest_open(payload, (size_t)len, d->release_pk, &m, &err) < 0) {
        refuse(err.msg);
        return;
    }
    /* After an install the device comes back before the service has cleared
     * the (already accepted) manifest of the firmware it now runs. */
    if (!strcmp(m.device, d->id) && !strcmp(m.firmware.uuid, d->uuid) &&
        m.sequence <= d->last_sequence) {
        pn_manifest_free(&m);
        return;
    }
    /* The manifest this device accepted and has not carried out yet, again:
     * it restarted or lost its connection mid-download.  Byte for byte the
     * same envelope, so it is no replay; carry on with it. */
    unsigned char sum[crypto_hash_sha256_BYTES];
    char digest[65];
    crypto_hash_sha256(sum, payload, (unsigned long long)len);
    sodium_bin2hex(digest, sizeof(digest), sum, sizeof(sum));
    bool again = d->accepted[0] && m.sequence == d->last_sequence && !strcmp(digest, d->accepted);
    if (pn_manifest_check(&m, d->id, again ? d->last_sequence - 1 : d->last_sequence, time(NULL),
                          &err) < 0) {
        refuse(err.msg);
        pn_manifest_free(&m);
        return;
    }
    int k = 0;
    while (k < d->nkeys && pn_fwkey_verify(d->fw_keys[k].pk, m.firmware.meta_conf,
                                           m.firmware.meta_conf_len, m.firmware.meta_conf_sig) != 0)
        k++;
    if (k == d->nkeys) {
        refuse("firmware meta.conf is not signed by any of this device's firmware keys");
        pn_manifest_free(&m);
        return;
    }
    /* Accepted: remember the sequence at once, so it can never be replayed. */
    d->last_sequence = m.sequence;
    snprintf(d->accepted, sizeof(d->accepted), "%s", digest);
    save_state(d);
    if (!strcmp(m.firmware.uuid, d->uuid)) {
        pn_manifest_free(&m);
        if (d->updating) /* the newer instruction wins */
            abandon_update(d, "a newer manifest names the running firmware");
        report(d, "idle", 100, NULL); /* already running it */
        return;
    }
    bool same = d->updating && !strcmp(d->m.firmware.uuid, m.firmware.uuid);
    if (d->updating && !same)
        abandon_update(d, "a newer manifest names other firmware");
    pn_manifest_free(&d->m);
    d->m = m;
    size_t ub = 0;
    if (sodium_hex2bin(d->uuid_bin, sizeof(d->uuid_bin), m.firmware.uuid, strlen(m.firmware.uuid),
                       "-", &ub, NULL) != 0 ||
        ub != sizeof(d->uuid_bin))
        memset(d->uuid_bin, 0, sizeof(d->uuid_bin)); /* matches no chunk */
    /* The one being carried out, again (piniond published it again after
     * a restart, or the broker delivered the retained copy at a
     * reconnect): nothing new was accepted. */
    if (again && same)
        printf("same manifest %lld again: carrying on\n", (long long)m.sequence);
    else
        printf("accepted manifest %lld for %s %s\n", (long long)m.sequence, m.firmware.product,
               m.firmware.version);
    if (!same) {
        /* Resume a partial download of the same firmware from its size. */
        char p[4096];
        struct stat st;
        part_path(d, m.firmware.uuid, p, sizeof(p));
        d->have = stat(p, &st) == 0 ? (uint64_t)st.st_size : 0;
        if (d->have > (uint64_t)m.firmware.size) { /* not this firmware's bytes */
            unlink(p);
            d->have = 0;
        }
        d->updating = true;
        d->last_pct = -1;
        d->last_report = 0;
        if (d->have) {
            printf("resuming download at byte %llu of %lld\n", (unsigned long long)d->have,
                   (long long)m.firmware.size);
            report(d, "downloading", percent(d->have, m.firmware.size), NULL);
        } else {
            report(d, "received", 0, NULL);
        }
    }
    if (d->have == (uint64_t)d->m.firmware.size) { /* all there before a restart */
        finish(d);
        return;
    }
    /* Also on the same manifest again, or a re-issue of the firmware being
     * downloaded: the service publishes it again after a restart, when the
     * last request or its answer may have been lost.  A duplicate answer is
     * ignored (offset != have). */
    request_chunk(d);
}

/* Steps 5 and 6. */
static void finish(struct device *d)
{
    struct pn_err err;
    char part[4096], image[4096];
    part_path(d, d->m.firmware.uuid, part, sizeof(part));
    unsigned char digest[32];
    char hex[65];
    FILE *f = fopen(part, "rb");
    crypto_hash_sha256_state h;
    crypto_hash_sha256_init(&h);
    unsigned char buf[65536];
    size_t n;
    while (f && (n = fread(buf, 1, sizeof(buf), f)) > 0)
        crypto_hash_sha256_update(&h, buf, n);
    if (f)
        fclose(f);
    crypto_hash_sha256_final(&h, digest);
    sodium_bin2hex(hex, sizeof(hex), digest, sizeof(digest));
    end_update(d);
    if (strcmp(hex, d->m.firmware.sha256) != 0) {
        unlink(part);
        report(d, "failed", 0, "downloaded firmware does not match the manifest's SHA-256");
        return;
    }
    struct pn_fw_info info;
    if (pn_fw_verify_path(part, d->fw_keys, (size_t)d->nkeys, &info, &err) < 0 ||
        strcmp(info.meta.uuid, d->m.firmware.uuid) != 0) {
        pn_fw_info_free(&info);
        unlink(part);
        report(d, "failed", 0, "firmware archive fails verification");
        return;
    }
    pn_fw_info_free(&info);
    report(d, "installing", 100, NULL);
    if (d->fail_installs > 0) {
        d->fail_installs--;
        report(d, "failed", 0, "simulated install failure");
        return;
    }
    /* Install: write data/image out of the verified archive. */
    snprintf(image, sizeof(image), "%s/installed.img", d->state_dir);
    struct archive *a = archive_read_new();
    archive_read_support_format_zip(a);
    struct archive_entry *e;
    int ok = 0;
    if (archive_read_open_filename(a, part, 65536) == ARCHIVE_OK) {
        while (archive_read_next_header(a, &e) == ARCHIVE_OK) {
            if (strcmp(archive_entry_pathname(e), "data/image") != 0)
                continue;
            int fd = open(image, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            ok = fd >= 0 && archive_read_data_into_fd(a, fd) == ARCHIVE_OK;
            if (fd >= 0)
                close(fd);
        }
    }
    archive_read_free(a);
    if (!ok) {
        report(d, "failed", 0, "archive has no data/image to install");
        return;
    }
    snprintf(d->uuid, sizeof(d->uuid), "%s", d->m.firmware.uuid);
    snprintf(d->version, sizeof(d->version), "%s", d->m.firmware.version);
    snprintf(d->product, sizeof(d->product), "%s", d->m.firmware.product);
    snprintf(d->platform, sizeof(d->platform), "%s", d->m.firmware.platform);
    snprintf(d->arch, sizeof(d->arch), "%s", d->m.firmware.architecture);
    save_state(d);
    unlink(part);
    printf("installed %s %s\n", d->product, d->version);
    d->reboot = true; /* come back reporting the new firmware */
}

/* Step 4: one chunk: "PNC1", uuid, offset, length, bytes. */
static void on_chunk(struct device *d, const unsigned char *p, int len)
{
    if (!d->updating || len < 32 || memcmp(p, "PNC1", 4) != 0)
        return;
    uint64_t off = 0;
    uint32_t n = 0;
    for (int i = 0; i < 8; i++)
        off = (off << 8) | p[20 + i];
    for (int i = 0; i < 4; i++)
        n = (n << 8) | p[28 + i];
    if ((uint32_t)(len - 32) != n || off != d->have || memcmp(p + 4, d->uuid_bin, 16) != 0)
        return; /* not the chunk we asked for (another firmware, offset): ignore */
    char part[4096];
    part_path(d, d->m.firmware.uuid, part, sizeof(part));
    if (n > (uint64_t)d->m.firmware.size - d->have || n == 0) {
        /* Checked before writing a byte: more than the manifest's size, or
         * nothing left to give before it. */
        unlink(part);
        end_update(d);
        report(d, "failed", 0,
               n ? "download is larger than the manifest says"
                 : "the service has no more bytes before the manifest's size");
        return;
    }
    int fd = open(part, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0 || write(fd, p + 32, n) != (ssize_t)n) {
        if (fd >= 0)
            close(fd);
        end_update(d);
        report(d, "failed", 0, "cannot store the download");
        return;
    }
    close(fd);
    d->have += n;
    if (d->have == (uint64_t)d->m.firmware.size) {
        finish(d);
        return;
    }
    /* Progress every 25 %, and at least once a minute on a slow link: the
     * service expires updates that stay silent (inflight_timeout). */
    int pct = percent(d->have, d->m.firmware.size);
    if (pct / 25 != d->last_pct / 25 || time(NULL) - d->last_report >= 60) {
        report(d, "downloading", pct, NULL);
        d->last_pct = pct;
        d->last_report = time(NULL);
    }
    request_chunk(d);
}

static void on_connect(struct mosquitto *m, void *arg, int rc)
{
    struct device *d = arg;
    char topic[256];
    printf("connack %d\n", rc);
    fflush(stdout);
    if (rc)
        return;
    snprintf(topic, sizeof(topic), "%s/%s/down/#", d->root, d->id);
    mosquitto_subscribe(m, NULL, topic, 1);
    /* Mid-download (a lost connection): the retained manifest, which comes
     * next, makes it ask for the next chunk again. */
    if (d->updating)
        report(d, "downloading", percent(d->have, d->m.firmware.size), NULL);
    else
        report(d, "idle", 0, NULL);
}

static void on_message(struct mosquitto *m, void *arg, const struct mosquitto_message *msg)
{
    struct device *d = arg;
    (void)m;
    const char *leaf = strrchr(msg->topic, '/');
    if (!leaf)
        return;
    if (!strcmp(leaf, "/update"))
        on_manifest(d, msg->payload, msg->payloadlen);
    else if (!strcmp(leaf, "/chunk"))
        on_chunk(d, msg->payload, msg->payloadlen);
}

static void usage(FILE *to)
{
    fprintf(to, "usage: pinion-device --host H --port P --cafile CA --cert C --key K --id ID\n"
                "  --release-key RELEASE.pub --fw-key FW.pub [--fw-key ...] --state DIR\n"
                "  [--product P --version V --platform X --architecture Y]\n"
                "  [--topic-root R] [--chunk BYTES] [--fail-installs N] [--run-for SECONDS]\n"
                "  [--status-every SECONDS]\n");
}

int main(int argc, char **argv)
{
    static struct device d;
    const char *host = "127.0.0.1", *cafile = NULL, *cert = NULL, *key = NULL, *rk = NULL;
    int port = 8883;
    double run_for = 0;
    d.root = "fleet";
    d.chunk = 65536;
    d.status_every = 300;
    struct pn_err err;
    static struct option lo[] = {{"host", 1, 0, 'h'},         {"port", 1, 0, 'p'},
                                 {"cafile", 1, 0, 'a'},       {"cert", 1, 0, 'c'},
                                 {"key", 1, 0, 'k'},          {"id", 1, 0, 'i'},
                                 {"release-key", 1, 0, 'r'},  {"fw-key", 1, 0, 'f'},
                                 {"state", 1, 0, 's'},        {"product", 1, 0, 'P'},
                                 {"version", 1, 0, 'V'},      {"platform", 1, 0, 'X'},
                                 {"architecture", 1, 0, 'Y'}, {"topic-root", 1, 0, 't'},
                                 {"chunk", 1, 0, 'n'},        {"fail-installs", 1, 0, 'F'},
                                 {"run-for", 1, 0, 'R'},      {"help", 0, 0, 'H'},
                                 {"status-every", 1, 0, 'S'}, {0, 0, 0, 0}};
    if (sodium_init() < 0)
        return 1;
    const char *pv[4] = {0};
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'h':
            host = optarg;
            break;
        case 'p':
            port = atoi(optarg);
            break;
        case 'a':
            cafile = optarg;
            break;
        case 'c':
            cert = optarg;
            break;
        case 'k':
            key = optarg;
            break;
        case 'i':
            d.id = optarg;
            break;
        case 'r':
            rk = optarg;
            break;
        case 'f':
            if (d.nkeys == MAX_FW_KEYS ||
                pn_fwkey_load_pub(optarg, d.fw_keys[d.nkeys].pk, &err) < 0) {
                fprintf(stderr, "pinion-device: %s\n",
                        d.nkeys == MAX_FW_KEYS ? "too many keys" : err.msg);
                return 2;
            }
            pn_fwkey_id(d.fw_keys[d.nkeys].pk, d.fw_keys[d.nkeys].id);
            d.nkeys++;
            break;
        case 's':
            d.state_dir = optarg;
            break;
        case 'P':
            pv[0] = optarg;
            break;
        case 'V':
            pv[1] = optarg;
            break;
        case 'X':
            pv[2] = optarg;
            break;
        case 'Y':
            pv[3] = optarg;
            break;
        case 't':
            d.root = optarg;
            break;
        case 'n':
            d.chunk = atoi(optarg);
            break;
        case 'F':
            d.fail_installs = atoi(optarg);
            break;
        case 'R':
            run_for = atof(optarg);
            break;
        case 'S':
            d.status_every = atoi(optarg);
            break;
        case 'H':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!cafile || !cert || !key || !d.id || !rk || !d.nkeys || !d.state_dir) {
        usage(stderr);
        return 2;
    }
    if (pn_fwkey_load_pub(rk, d.release_pk, &err) < 0) {
        fprintf(stderr, "pinion-device: %s\n", err.msg);
        return 2;
    }
    mkdir(d.state_dir, 0755);
    load_state(&d);
    /* Factory firmware, when the state has none yet. */
    if (!d.version[0] && pv[1]) {
        snprintf(d.product, sizeof(d.product), "%s", pv[0] ? pv[0] : "");
        snprintf(d.version, sizeof(d.version), "%s", pv[1]);
        snprintf(d.platform, sizeof(d.platform), "%s", pv[2] ? pv[2] : "");
        snprintf(d.arch, sizeof(d.arch), "%s", pv[3] ? pv[3] : "");
        snprintf(d.uuid, sizeof(d.uuid), "factory");
        save_state(&d);
    }
    signal(SIGTERM, on_sig);
    signal(SIGINT, on_sig);
    setvbuf(stdout, NULL, _IOLBF, 0);

    mosquitto_lib_init();
    time_t start = time(NULL);
    while (!stop) {
        d.mq = mosquitto_new(d.id, true, &d);
        if (!d.mq || mosquitto_tls_set(d.mq, cafile, NULL, cert, key, NULL) != MOSQ_ERR_SUCCESS)
            return 1;
        mosquitto_int_option(d.mq, MOSQ_OPT_TCP_NODELAY, 1);
        mosquitto_connect_callback_set(d.mq, on_connect);
        mosquitto_message_callback_set(d.mq, on_message);
        d.reboot = false;
        if (mosquitto_connect(d.mq, host, port, 30) == MOSQ_ERR_SUCCESS) {
            while (!stop && !d.reboot) {
                if (mosquitto_loop(d.mq, 100, 1) != MOSQ_ERR_SUCCESS)
                    break;
                if (d.updating && d.last_request && time(NULL) - d.last_request >= CHUNK_RETRY_S)
                    request_chunk(&d);
                /* Idle reports again now and then: the first one may have
                 * been sent while piniond was not connected to this broker. */
                if (!d.updating && d.status_every > 0 && d.last_status &&
                    time(NULL) - d.last_status >= d.status_every)
                    report(&d, "idle", 0, NULL);
                if (run_for > 0 && difftime(time(NULL), start) >= run_for)
                    stop = 1;
            }
            mosquitto_disconnect(d.mq);
        }
        mosquitto_destroy(d.mq);
        if (run_for > 0 && difftime(time(NULL), start) >= run_for)
            break;
        if (!stop)
            usleep(d.reboot ? 100000 : 1000000); /* "reboot", or retry after a drop */
    }
    pn_manifest_free(&d.m);
    mosquitto_lib_cleanup();
    return 0;
}
