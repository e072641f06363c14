/* SPDX-License-Identifier: MIT */
/* epoll-echo's two sides: TCP and the loop (epoll-echo.c), UDP (epoll-udp.c). */
#ifndef BENCH_EPOLL_ECHO_H
#define BENCH_EPOLL_ECHO_H

#include <stdbool.h>
#include <sys/socket.h>

#define UDP_SOCKETS_MAX 16

/* The first member of everything whose address is an epoll_event's data.ptr,
 * so the loop can tell what became ready. */
enum ep_kind { EP_LISTENER, EP_SIGNAL, EP_CONN, EP_UDP };

struct udp_echo;

/* Length of a bound AF_INET or AF_INET6 address. */
socklen_t addr_len(const struct sockaddr_storage *ss);

/* Prints "listening on PREFIXHOST:PORT" for fd's bound address, flushed. */
void print_listening(const char *prefix, int fd);

/* Binds a UDP echo socket to each of addrs[0..n) and adds it to epfd; each
 * one's data.ptr leads with EP_UDP. Returns 0 or -errno (nothing left open). */
int udp_echo_open(struct udp_echo **out, int epfd, const struct sockaddr_storage *addrs,
		  unsigned int n);

/* Serves one readiness report of the UDP socket whose data.ptr is tag. */
void udp_echo_readable(void *tag);

/* Closes the sockets, after printing their counters unless quiet. */
void udp_echo_close(struct udp_echo *u, bool quiet);

#endif
