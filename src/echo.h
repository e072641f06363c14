/* SPDX-License-Identifier: MIT */
/* The echo engine: what each recv and send completion does to a connection,
 * and how a connection ends. */
#ifndef RINGECHO_ECHO_H
#define RINGECHO_ECHO_H

#include "conn.h"
#include "peer.h"

#include <liburing.h>
#include <stdint.h>
#include <stdbool.h>
#include <sys/socket.h>

struct worker;
struct peer_key;

/* How long a refused client may take to close after its EOF before the
 * socket is closed anyway, and how many may linger at once. */
#define REFUSE_LINGER_MS  1000
#define REFUSE_LINGER_MAX 256

/* Serve a new client on fd (peer: its address, for the per-IP count). */
void echo_serve(struct worker *w, int fd, const struct peer_key *peer,
		const struct sockaddr_storage *ss);
/* A client refused by a limit: a clean EOF at once, even if it already
 * sent something; its input is read and dropped until it closes. */
void echo_refuse(struct worker *w, int fd);
void echo_on_recv(struct worker *w, const struct io_uring_cqe *cqe);
void echo_on_send(struct worker *w, const struct io_uring_cqe *cqe);
/* A cancel's completion (only failures post one). */
void echo_on_cancel(struct worker *w, const struct io_uring_cqe *cqe);
/* Re-arm connections whose recv found the buffer ring empty, one for each
 * buffer that came back in this batch. Call after each batch. */
void echo_retry_starved(struct worker *w);
/* Start the sends the batch of completions just handled made due. */
void echo_start_sends(struct worker *w);
/* Each tick: a receive starved of buffers is retried (a safety net). */
void echo_tick(struct worker *w);
/* c was active: its idle clock starts again (the idle LRU's tail). */
void echo_touch(struct worker *w, struct conn *c);
/* c's echo moved (its client read): its send_timeout_ms clock starts again. */
void echo_progress(struct worker *w, struct conn *c);
/* Nothing received is waiting to be echoed, no send is in flight, and no
 * byte the client sent waits unread in the socket (a receive starved of
 * buffers leaves them there): c may be ended with a clean EOF. */
bool echo_owes_nothing(const struct conn *c);
/* Receive no more from c; send what it already sent us, then a clean EOF,
 * and close at the client's EOF. */
void echo_cut(struct worker *w, struct conn *c, enum conn_cut why);
/* For a connection that owes nothing: EOF and close now, without a reset. */
void echo_end_quietly(struct worker *w, struct conn *c, enum conn_cut why);
/* Close c now, cancelling whatever is in flight; c may be freed at once. */
void echo_reset(struct worker *w, struct conn *c);

/* For a live upgrade: stop receiving on c (and, with sends, cancel the send
 * in flight); a refused client is closed. The completions still come. */
void echo_stop(struct worker *w, struct conn *c, bool sends);
/* Do next what c's flags say (receive, send what waits, close); for a
 * connection taken back after a failed upgrade. */
void echo_settle(struct worker *w, struct conn *c);

/* A connection handed over by the program before: its state. */
struct echo_adopted {
	uint16_t flags;	       /* CONN_READ_EOF, CONN_NO_RECV, CONN_WR_SHUT */
	uint8_t cut;	       /* enum conn_cut */
	uint64_t idle_ms;      /* since its last activity */
	uint64_t recv_idle_ms; /* since its last byte received */
	struct peer_key peer;  /* not valid: asked of the socket */
};
/* Serve fd, its echo starting with the len unsent bytes it is owed. It
 * counts against the limits, but is never refused: it was served already.
 * 0 or -ENOMEM (fd is left open). */
int echo_adopt(struct worker *w, int fd, const char *bytes, uint32_t len,
	       const struct echo_adopted *how);

#endif
