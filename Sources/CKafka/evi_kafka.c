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
    int (*poll_set_consumer)(void *);
    void *(*partition_list_new)(int);
    void *(*partition_list_add)(void *, const char *, int32_t);
    int (*partition_list_set_offset)(void *, const char *, int32_t, int64_t);
    void (*partition_list_destroy)(void *);
    int (*subscribe)(void *, void *);
    evi_rd_kafka_message *(*consumer_poll)(void *, int);
    void (*message_destroy)(evi_rd_kafka_message *);
    int (*offsets_store)(void *, void *);
    int (*consumer_close)(void *);
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
    /* EVI_LIBRDKAFKA names another file: how the tests play a machine without the library. */
    const char *name = getenv("EVI_LIBRDKAFKA");
    rd.handle = dlopen(name != NULL && name[0] != '\0' ? name : "librdkafka.so.1", RTLD_NOW | RTLD_LOCAL);
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
    BIND(poll_set_consumer, "rd_kafka_poll_set_consumer");
    BIND(partition_list_new, "rd_kafka_topic_partition_list_new");
    BIND(partition_list_add, "rd_kafka_topic_partition_list_add");
    BIND(partition_list_set_offset, "rd_kafka_topic_partition_list_set_offset");
    BIND(partition_list_destroy, "rd_kafka_topic_partition_list_destroy");
    BIND(subscribe, "rd_kafka_subscribe");
    BIND(consumer_poll, "rd_kafka_consumer_poll");
    BIND(message_destroy, "rd_kafka_message_destroy");
    BIND(offsets_store, "rd_kafka_offsets_store");
    BIND(consumer_close, "rd_kafka_consumer_close");
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

void *evi_kafka_consumer_new(const char *const *names, const char *const *values, int count, const char *topic,
                             char *error, size_t error_size) {
    void *conf = rd.conf_new();
    for (int index = 0; index < count; index++) {
        char reason[512] = "";
        if (rd.conf_set(conf, names[index], values[index], reason, sizeof reason) != 0) {
            snprintf(error, error_size, "%s: %s", names[index], reason);
            rd.conf_destroy(conf);
            return NULL;
        }
    }
    void *consumer = rd.new_handle(1 /* RD_KAFKA_CONSUMER */, conf, error, error_size);
    if (consumer == NULL) {
        rd.conf_destroy(conf);
        return NULL;
    }
    rd.poll_set_consumer(consumer);
    void *topics = rd.partition_list_new(1);
    rd.partition_list_add(topics, topic, -1 /* RD_KAFKA_PARTITION_UA */);
    int result = rd.subscribe(consumer, topics);
    rd.partition_list_destroy(topics);
    if (result != 0) {
        snprintf(error, error_size, "subscribe: %s", rd.err2str(result));
        rd.consumer_close(consumer);
        rd.destroy(consumer);
        return NULL;
    }
    return consumer;
}

int evi_kafka_consumer_poll(void *consumer, int timeout_ms, evi_kafka_record *record) {
    evi_rd_kafka_message *message = rd.consumer_poll(consumer, timeout_ms);
    if (message == NULL) return 0;
    record->payload = message->payload;
    record->length = message->len;
    record->partition = message->partition;
    record->offset = message->offset;
    record->error = message->err;
    record->message = message;
    return 1;
}

void evi_kafka_record_destroy(void *message) { rd.message_destroy(message); }

/* The layout of rd_kafka_topic_partition_t (rdkafka.h): the per-partition result of a store. */
typedef struct {
    char *topic;
    int32_t partition;
    int64_t offset;
    void *metadata;
    size_t metadata_size;
    void *opaque;
    int err;
    void *_private;
} evi_rd_kafka_topic_partition;

int evi_kafka_store_offset(void *consumer, const char *topic, int partition, long long next_offset) {
    void *offsets = rd.partition_list_new(1);
    evi_rd_kafka_topic_partition *element = rd.partition_list_add(offsets, topic, partition);
    element->offset = next_offset;
    int result = rd.offsets_store(consumer, offsets);
    if (result == 0) result = element->err;
    rd.partition_list_destroy(offsets);
    return result;
}

void evi_kafka_consumer_close(void *consumer) {
    rd.consumer_close(consumer);
    rd.destroy(consumer);
}
