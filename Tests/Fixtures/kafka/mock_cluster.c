/*
 * A Kafka-protocol peer for the tests: librdkafka's mock cluster (rdkafka_mock.h), which speaks
 * the real Kafka protocol to other processes (evi, kcat) on loopback ports of its own.
 *
 *   mock-cluster BROKERS [TOPIC:PARTITIONS ...]
 *
 * Prints its bootstrap servers on the first line of stdout, then runs until SIGTERM/SIGINT.
 * SIGUSR1 sets every broker down, SIGUSR2 back up (each change acknowledged on stdout); lines
 * `down N` / `up N` on stdin do the same for broker N.
 *
 * Built by scripts/test.sh: cc -O2 -o .build/kafka-mock-cluster Tests/Fixtures/kafka/mock_cluster.c -lrdkafka
 */
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t want = 0; /* 1: all down, 2: all up, 3: stop */

static void on_signal(int number) {
    want = number == SIGUSR1 ? 1 : number == SIGUSR2 ? 2 : 3;
}

static rd_kafka_mock_cluster_t *cluster;
static int brokers;

static void *read_commands(void *unused) {
    (void)unused;
    char line[128];
    while (fgets(line, sizeof line, stdin) != NULL) {
        int id;
        if (sscanf(line, "down %d", &id) == 1) {
            rd_kafka_mock_broker_set_down(cluster, id);
            printf("broker %d down\n", id);
        } else if (sscanf(line, "up %d", &id) == 1) {
            rd_kafka_mock_broker_set_up(cluster, id);
            printf("broker %d up\n", id);
        }
        fflush(stdout);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2 || (brokers = atoi(argv[1])) < 1) {
        fprintf(stderr, "usage: %s BROKERS [TOPIC:PARTITIONS ...]\n", argv[0]);
        return 2;
    }
    char error[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *handle = rd_kafka_new(RD_KAFKA_PRODUCER, conf, error, sizeof error);
    if (handle == NULL) {
        fprintf(stderr, "rd_kafka_new: %s\n", error);
        return 1;
    }
    cluster = rd_kafka_mock_cluster_new(handle, brokers);
    if (cluster == NULL) {
        fprintf(stderr, "cannot start the mock cluster\n");
        return 1;
    }
    for (int index = 2; index < argc; index++) {
        char topic[256];
        int partitions = 1;
        if (sscanf(argv[index], "%255[^:]:%d", topic, &partitions) < 1) continue;
        rd_kafka_mock_topic_create(cluster, topic, partitions, 1);
    }
    printf("%s\n", rd_kafka_mock_cluster_bootstraps(cluster));
    fflush(stdout);
    signal(SIGUSR1, on_signal);
    signal(SIGUSR2, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    pthread_t reader;
    pthread_create(&reader, NULL, read_commands, NULL);
    pthread_detach(reader);
    while (want != 3) {
        usleep(20000);
        if (want == 1 || want == 2) {
            for (int id = 1; id <= brokers; id++) {
                if (want == 1) rd_kafka_mock_broker_set_down(cluster, id);
                else rd_kafka_mock_broker_set_up(cluster, id);
            }
            printf("all brokers %s\n", want == 1 ? "down" : "up");
            fflush(stdout);
            want = 0;
        }
    }
    rd_kafka_mock_cluster_destroy(cluster);
    rd_kafka_destroy(handle);
    return 0;
}
