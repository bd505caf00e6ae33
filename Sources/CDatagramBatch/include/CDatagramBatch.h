#ifndef C_DATAGRAM_BATCH_H
#define C_DATAGRAM_BATCH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/// Sends up to `count` datagrams with one sendmmsg(2) call (Swift's Glibc module does not
/// export it). The payloads lie back to back in `data`, the i-th `lengths[i]` bytes long, so the
/// caller hands over two buffers instead of one pinned pointer per datagram. `address` may be
/// NULL for a connected socket. Returns how many were sent; when the first one fails, returns -1
/// and sets *error to its errno.
int evi_send_datagrams(int fd, const uint8_t *data, const size_t *lengths, unsigned int count,
                       const struct sockaddr *address, socklen_t address_length, int *error);

/// Receives up to `count` datagrams (at most 256) with one recvmmsg(2) call, each into its own
/// `slot`-byte slice of `buffer`, their lengths into `lengths`. Waits for the first one as the
/// socket's receive timeout allows. Returns how many arrived, or -1 (errno) when none did.
int evi_receive_datagrams(int fd, uint8_t *buffer, size_t slot, size_t *lengths, unsigned int count);

#endif
