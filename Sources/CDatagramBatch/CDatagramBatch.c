#define _GNU_SOURCE
#include "CDatagramBatch.h"

#include <errno.h>
#include <string.h>
#include <sys/uio.h>

enum { EVI_BATCH_MAX = 256 };

int evi_send_datagrams(int fd, const uint8_t *data, const size_t *lengths, unsigned int count,
                       const struct sockaddr *address, socklen_t address_length, int *error) {
    struct mmsghdr messages[EVI_BATCH_MAX];
    struct iovec vectors[EVI_BATCH_MAX];
    if (count > EVI_BATCH_MAX) count = EVI_BATCH_MAX;
    memset(messages, 0, sizeof(struct mmsghdr) * count);
    size_t offset = 0;
    for (unsigned int index = 0; index < count; index++) {
        vectors[index].iov_base = (void *)(data + offset);
        vectors[index].iov_len = lengths[index];
        offset += lengths[index];
        messages[index].msg_hdr.msg_iov = &vectors[index];
        messages[index].msg_hdr.msg_iovlen = 1;
        messages[index].msg_hdr.msg_name = (void *)address;
        messages[index].msg_hdr.msg_namelen = address ? address_length : 0;
    }
    int sent = sendmmsg(fd, messages, count, MSG_NOSIGNAL);
    if (sent < 0) *error = errno;
    return sent;
}

int evi_receive_datagrams(int fd, uint8_t *buffer, size_t slot, size_t *lengths, unsigned int count) {
    struct mmsghdr messages[EVI_BATCH_MAX];
    struct iovec vectors[EVI_BATCH_MAX];
    if (count > EVI_BATCH_MAX) count = EVI_BATCH_MAX;
    memset(messages, 0, sizeof(struct mmsghdr) * count);
    for (unsigned int index = 0; index < count; index++) {
        vectors[index].iov_base = buffer + slot * index;
        vectors[index].iov_len = slot;
        messages[index].msg_hdr.msg_iov = &vectors[index];
        messages[index].msg_hdr.msg_iovlen = 1;
    }
    int received = recvmmsg(fd, messages, count, MSG_WAITFORONE, NULL);
    for (int index = 0; index < received; index++) lengths[index] = messages[index].msg_len;
    return received;
}
