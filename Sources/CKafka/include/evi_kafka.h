#ifndef EVI_KAFKA_H
#define EVI_KAFKA_H

#include <stddef.h>

/*
 * librdkafka, loaded at run time (dlopen of librdkafka.so.1) when the first kafka socket is used:
 * evi builds and runs without the library, and says which Debian package to install when a kafka
 * socket needs it. Only the producer calls evi uses are wrapped; their declarations follow
 * rdkafka.h (librdkafka 2.x) and are written here, so building needs no librdkafka headers.
 */

/* Called on the producer's poll thread for every message's delivery report: `opaque` is what
 * evi_kafka_produce was given, `error` 0 on success (else a librdkafka error code and its text). */
typedef void (*evi_kafka_report_fn)(void *context, void *opaque, int error, const char *error_text);

/* Loads the library once; 0 when loaded, else -1 with the reason in `error`. */
int evi_kafka_load(char *error, size_t error_size);

/* Whether librdkafka takes this property (global when `global`, else topic), without creating
 * anything: 0, or -1 with librdkafka's reason in `error` (unknown name, invalid value). */
int evi_kafka_check_property(int global, const char *name, const char *value, char *error, size_t error_size);

/* librdkafka's version string (after a successful load). */
const char *evi_kafka_version(void);

/* A producer with these global properties; NULL with the reason in `error` (an unknown or invalid
 * property names itself). Reports go to `report(context, …)`. */
void *evi_kafka_producer_new(const char *const *names, const char *const *values, int count,
                             evi_kafka_report_fn report, void *context, char *error, size_t error_size);

/* A topic handle with these topic properties; NULL with the reason in `error`. */
void *evi_kafka_topic_new(void *producer, const char *topic, const char *const *names,
                          const char *const *values, int count, char *error, size_t error_size);

/* Queues one message (copied) to any partition; 0, or the librdkafka error code it was refused with
 * at once (then no report follows). */
int evi_kafka_produce(void *topic, const void *payload, size_t length, const void *key, size_t key_length,
                      void *opaque);

/* Serves delivery reports for up to `timeout_ms`; returns how many. */
int evi_kafka_poll(void *producer, int timeout_ms);

const char *evi_kafka_error_text(int error);

void evi_kafka_topic_destroy(void *topic);

/* Waits up to `flush_ms` for outstanding messages, then destroys the producer. */
void evi_kafka_producer_destroy(void *producer, int flush_ms);

/* A consumer-group member subscribed to `topic`, offsets stored by evi (evi_kafka_store_offset)
 * and committed by librdkafka in the background; NULL with the reason in `error`. */
void *evi_kafka_consumer_new(const char *const *names, const char *const *values, int count, const char *topic,
                             char *error, size_t error_size);

/* One record, or an error (then `error` is non-zero and `payload` its text). */
typedef struct {
    const void *payload;
    size_t length;
    int partition;
    long long offset;
    int error;
    void *message; /* for evi_kafka_record_destroy */
} evi_kafka_record;

/* Waits up to `timeout_ms` for a record: 1 and `record` filled (destroy it), or 0. */
int evi_kafka_consumer_poll(void *consumer, int timeout_ms, evi_kafka_record *record);

void evi_kafka_record_destroy(void *message);

/* Everything before `next_offset` of the partition is done with: committed with the next commit. */
int evi_kafka_store_offset(void *consumer, const char *topic, int partition, long long next_offset);

/* Commits what is stored, leaves the group, destroys the consumer. */
void evi_kafka_consumer_close(void *consumer);

#endif
