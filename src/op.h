/* SPDX-License-Identifier: MIT */
/* The user_data codec: every SQE carries the operation type in the top
 * OP_TYPE_BITS bits and an object id in the rest:
 *
 *   63        56 55                                          0
 *  +-----------+---------------------------------------------+
 *  |  op type  |  id (connection id, or listener id)          |
 *  +-----------+---------------------------------------------+
 *
 * Connection ids come from a 56-bit counter that never wraps in practice
 * (2^56 accepts) and are never reused, so a completion that arrives after its
 * connection was freed finds nothing in the table and is dropped safely. An fd
 * would not do: the kernel reuses the lowest free number at once. */
#ifndef RINGECHO_OP_H
#define RINGECHO_OP_H

#include <stdint.h>

enum op_type {
	OP_NONE = 0,  /* never used, so a zeroed user_data is recognisable */
	OP_ACCEPT,    /* id: listener id */
	OP_RECV,      /* id: connection id */
	OP_SEND,      /* id: connection id */
	OP_CANCEL,    /* id: whatever was cancelled; result only logged */
	OP_SIGNAL,    /* signalfd poll; id unused */
	OP_TIMER,     /* the loop's one timer; id: timer generation */
	OP_UDP_RECV,  /* multishot recvmsg on a UDP socket; id: listener id */
	OP_UDP_SEND,  /* a datagram's reply; id: the buffer it is sent from */
	OP_MAIL,      /* another loop rang our doorbell: mail waits; id unused */
	OP_MAIL_SENT, /* our doorbell SQE, if it failed; id unused */
	OP_TYPE_MAX
};

#define OP_TYPE_BITS 8
#define OP_ID_BITS   (64 - OP_TYPE_BITS)
#define OP_ID_MAX    ((UINT64_C(1) << OP_ID_BITS) - 1)

_Static_assert(OP_TYPE_MAX <= (1 << OP_TYPE_BITS), "op types must fit their bits");

static inline uint64_t op_encode(enum op_type type, uint64_t id)
{
	return ((uint64_t)type << OP_ID_BITS) | (id & OP_ID_MAX);
}

static inline enum op_type op_decode_type(uint64_t user_data)
{
	return (enum op_type)(user_data >> OP_ID_BITS);
}

static inline uint64_t op_decode_id(uint64_t user_data)
{
	return user_data & OP_ID_MAX;
}

#endif
