/* SPDX-License-Identifier: MIT */
/* The echo engine: what each accept, recv and send completion does to a
 * connection, and how a connection ends. */
#ifndef RINGECHO_ECHO_H
#define RINGECHO_ECHO_H

#include <liburing.h>

struct server;
struct conn;

void echo_on_accept(struct server *s, const struct io_uring_cqe *cqe);
void echo_on_recv(struct server *s, const struct io_uring_cqe *cqe);
void echo_on_send(struct server *s, const struct io_uring_cqe *cqe);
/* Re-arm connections whose recv found the buffer ring empty, once buffers
 * have come back. Call after each batch of completions. */
void echo_retry_starved(struct server *s);
/* Start the sends the batch of completions just handled made due. */
void echo_start_sends(struct server *s);
/* Finish connections that sent nothing for idle_timeout_ms while none of
 * their echo was waiting to be read; reset those still open a timeout after. */
void echo_expire_idle(struct server *s);
/* Receive no more from c; send what it already sent us, then a clean EOF. */
void echo_finish(struct server *s, struct conn *c);
/* Close c now, cancelling whatever is in flight; c may be freed at once. */
void echo_reset(struct server *s, struct conn *c);

#endif
