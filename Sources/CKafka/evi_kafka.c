#include "evi_kafka.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The layout of rd_kafka_message_t (rdkafka.h), which a delivery report carries. */
typedef struct {
    int err;
    void *rkt;
    int32_t partition;
    void *payload;
    size_t len;
    void *key;
    size_t key_len;
    int64_t offset;
    void *_private;
} evi_rd_kafka_message;

typedef void (*dr_msg_cb_fn)(void *rk, const evi_rd_kafka_message *message, void *opaque);

static struct {
    void *handle;
    const char *(*version_str)(void);
    void *(*conf_new)(void);
    void (*conf_destroy)(void *);
    int (*conf_set)(void *, const char *, const char *, char *, size_t);
    void (*conf_set_opaque)(void *, void *);
    void (*conf_set_dr_msg_cb)(void *, dr_msg_cb_fn);
    void *(*topic_conf_new)(void);
    void *(*default_topic_conf_dup)(void *);
    void (*topic_conf_destroy)(void *);
    int (*topic_conf_set)(void *, const char *, const char *, char *, size_t);
    void *(*new_handle)(int, void *, char *, size_t);
    void (*destroy)(void *);
    void *(*topic_new)(void *, const char *, void *);
    void (*topic_destroy)(void *);
    int (*produce)(void *, int32_t, int, void *, size_t, const void *, size_t, void *);
    int (*poll)(void *, int);
    int (*flush)(void *, int);
    const char *(*err2str)(int);
    int (*last_error)(void);
} rd;

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static char load_error[512];

#define BIND(field, name)                                                                        \
    do {                                                                                         \
        *(void **)(&rd.field) = dlsym(rd.handle, name);                                          \
        if (rd.field == NULL) {                                                                  \
            snprintf(load_error, sizeof load_error, "librdkafka.so.1 has no %s", name);         \
            return;                                                                              \
        }                                                                                        \
    } while (0)

static void load(void) {
    snprintf(load_error, sizeof load_error, "librdkafka not loaded");
    rd.handle = dlopen("librdkafka.so.1", RTLD_NOW | RTLD_LOCAL);
    if (rd.handle == NULL) {
        snprintf(load_error, sizeof load_error,
                 "kafka needs librdkafka.so.1 (Debian: apt-get install librdkafka1): %s", dlerror());
        return;
    }
    BIND(version_str, "rd_kafka_version_str");
    BIND(conf_new, "rd_kafka_conf_new");
    BIND(conf_destroy, "rd_kafka_conf_destroy");
    BIND(conf_set, "rd_kafka_conf_set");
    BIND(conf_set_opaque, "rd_kafka_conf_set_opaque");
    BIND(conf_set_dr_msg_cb, "rd_kafka_conf_set_dr_msg_cb");
    BIND(topic_conf_new, "rd_kafka_topic_conf_new");
    BIND(topic_conf_destroy, "rd_kafka_topic_conf_destroy");
    BIND(default_topic_conf_dup, "rd_kafka_default_topic_conf_dup");
    BIND(topic_conf_set, "rd_kafka_topic_conf_set");
    BIND(new_handle, "rd_kafka_new");
    BIND(destroy, "rd_kafka_destroy");
    BIND(topic_new, "rd_kafka_topic_new");
    BIND(topic_destroy, "rd_kafka_topic_destroy");
    BIND(produce, "rd_kafka_produce");
    BIND(poll, "rd_kafka_poll");
    BIND(flush, "rd_kafka_flush");
    BIND(err2str, "rd_kafka_err2str");
    BIND(last_error, "rd_kafka_last_error");
    load_error[0] = '\0';
}

int evi_kafka_load(char *error, size_t error_size) {
    pthread_once(&load_once, load);
    if (load_error[0] != '\0') {
        snprintf(error, error_size, "%s", load_error);
        return -1;
    }
    return 0;
}

const char *evi_kafka_version(void) { return rd.version_str(); }

int evi_kafka_check_property(int global, const char *name, const char *value, char *error, size_t error_size) {
    void *conf = global ? rd.conf_new() : rd.topic_conf_new();
    int result = global ? rd.conf_set(conf, name, value, error, error_size)
                        : rd.topic_conf_set(conf, name, value, error, error_size);
    if (global) {
        rd.conf_destroy(conf);
    } else {
        rd.topic_conf_destroy(conf);
    }
    return result == 0 ? 0 : -1;
}

/* What the conf opaque points at: where reports go. */
typedef struct {
    evi_kafka_report_fn report;
    void *context;
} reporter;

static void on_delivery(void *rk, const evi_rd_kafka_message *message, void *opaque) {
    (void)rk;
    reporter *to = opaque;
    to->report(to->context, message->_private, message->err, message->err ? rd.err2str(message->err) : "");
}

void *evi_kafka_producer_new(const char *const *names, const char *const *values, int count,
                             evi_kafka_report_fn report, void *context, char *error, size_t error_size) {
    void *conf = rd.conf_new();
    for (int index = 0; index < count; index++) {
        char reason[512] = "";
        if (rd.conf_set(conf, names[index], values[index], reason, sizeof reason) != 0) {
            snprintf(error, error_size, "%s", reason);
            rd.conf_destroy(conf);
            return NULL;
        }
    }
    reporter *to = malloc(sizeof *to);
    to->report = report;
    to->context = context;
    rd.conf_set_opaque(conf, to);
    rd.conf_set_dr_msg_cb(conf, on_delivery);
    void *producer = rd.new_handle(0 /* RD_KAFKA_PRODUCER */, conf, error, error_size);
    if (producer == NULL) {
        rd.conf_destroy(conf);  /* rd_kafka_new keeps the conf only when it succeeds */
        free(to);
    }
    /* `to` lives as long as the producer: a few bytes per broker list, freed with the process. */
    return producer;
}

void *evi_kafka_topic_new(void *producer, const char *topic, const char *const *names,
                          const char *const *values, int count, char *error, size_t error_size) {
    /* The producer's default topic properties (message.timeout.ms among them), then the socket's:
     * a fresh topic conf would drop the defaults set on the global one. */
    void *conf = rd.default_topic_conf_dup(producer);
    for (int index = 0; index < count; index++) {
        char reason[512] = "";
        if (rd.topic_conf_set(conf, names[index], values[index], reason, sizeof reason) != 0) {
            snprintf(error, error_size, "%s", reason);
            rd.topic_conf_destroy(conf);
            return NULL;
        }
    }
    void *handle = rd.topic_new(producer, topic, conf);
    if (handle == NULL) {
        snprintf(error, error_size, "%s", rd.err2str(rd.last_error()));
    }
    return handle;
}

int evi_kafka_produce(void *topic, const void *payload, size_t length, const void *key, size_t key_length,
                      void *opaque) {
    int result = rd.produce(topic, -1 /* RD_KAFKA_PARTITION_UA */, 0x2 /* RD_KAFKA_MSG_F_COPY */,
                            (void *)payload, length, key, key_length, opaque);
    return result == 0 ? 0 : rd.last_error();
}

int evi_kafka_poll(void *producer, int timeout_ms) { return rd.poll(producer, timeout_ms); }

const char *evi_kafka_error_text(int error) { return rd.err2str(error); }

void evi_kafka_topic_destroy(void *topic) { rd.topic_destroy(topic); }

void evi_kafka_producer_destroy(void *producer, int flush_ms) {
    rd.flush(producer, flush_ms);
    rd.destroy(producer);
}
