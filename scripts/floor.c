/*
 * An independent check of `evi bench`'s floor: a plain C loop sending the same 72-byte
 * notification with send(2) on connected UDP sockets to RECEIVERS loopback receivers (round robin),
 * each a thread counting with recv(2). Timed as evi bench times its floor: from the first send to
 * the last datagram received (or 200 ms without any).
 *
 *   gcc -O2 -pthread -o floor scripts/floor.c && ./floor DATAGRAMS RECEIVERS
 *
 * Prints one line: datagrams sent, received, seconds, datagrams/s.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char payload[] = "{\"jsonrpc\":\"2.0\",\"method\":\"E_BENCH\",\"params\":{\"str\":\"hello\",\"num\":42}}";

struct receiver {
    int fd;
    int port;
    atomic_long count;
    atomic_long last;
    atomic_int stop;
    pthread_t thread;
};

static long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static void *receive(void *argument) {
    struct receiver *r = argument;
    char buffer[2048];
    while (!atomic_load(&r->stop)) {
        if (recv(r->fd, buffer, sizeof buffer, 0) > 0) {
            atomic_store(&r->last, now_ns());
            atomic_fetch_add(&r->count, 1);
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    long datagrams = argc > 1 ? atol(argv[1]) : 1000000;
    int count = argc > 2 ? atoi(argv[2]) : 1;
    if (datagrams <= 0 || count < 1 || count > 16) {
        fprintf(stderr, "usage: floor DATAGRAMS RECEIVERS(1-16)\n");
        return 2;
    }
    struct receiver receivers[16];
    int senders[16];
    for (int i = 0; i < count; i++) {
        struct receiver *r = &receivers[i];
        memset(r, 0, sizeof *r);
        r->fd = socket(AF_INET, SOCK_DGRAM, 0);
        int size = 64 << 20; /* as evi bench: past net.core.rmem_max when allowed */
        if (setsockopt(r->fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) != 0)
            setsockopt(r->fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
        struct timeval timeout = {0, 20000};
        setsockopt(r->fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
        struct sockaddr_in address = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t length = sizeof address;
        if (bind(r->fd, (struct sockaddr *)&address, sizeof address) != 0) return 1;
        getsockname(r->fd, (struct sockaddr *)&address, &length);
        r->port = ntohs(address.sin_port);
        pthread_create(&r->thread, NULL, receive, r);
        senders[i] = socket(AF_INET, SOCK_DGRAM, 0);
        if (connect(senders[i], (struct sockaddr *)&address, sizeof address) != 0) return 1;
    }
    size_t length = strlen(payload);
    long started = now_ns();
    for (long n = 0; n < datagrams; n++) send(senders[n % count], payload, length, 0);
    long received = 0, previous = -1, changed = now_ns();
    for (;;) {
        received = 0;
        for (int i = 0; i < count; i++) received += atomic_load(&receivers[i].count);
        if (received >= datagrams) break;
        long now = now_ns();
        if (received != previous) {
            previous = received;
            changed = now;
        } else if (now - changed > 200000000L) {
            break;
        }
        usleep(1000);
    }
    long last = 0;
    for (int i = 0; i < count; i++) {
        long t = atomic_load(&receivers[i].last);
        if (t > last) last = t;
        atomic_store(&receivers[i].stop, 1);
    }
    for (int i = 0; i < count; i++) pthread_join(receivers[i].thread, NULL);
    double seconds = (last - started) / 1e9;
    printf("sent %ld received %ld seconds %.6f datagrams_per_second %.0f\n", datagrams, received, seconds,
           received / seconds);
    return 0;
}
