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

#endif
