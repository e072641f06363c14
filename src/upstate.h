/* SPDX-License-Identifier: MIT */
/* The state a live upgrade hands from the old program to the new one, in a
 * memfd: a header, then records.
 *
 * Every record starts with the same envelope in every version of the
 * format: its kind, its socket (fd or -1), the unsent echo bytes that go
 * with it, and a body whose layout is the version's. Each part has its own
 * checksum. So a program that does not know the version, or finds a body
 * damaged, can still find every socket and the bytes it owes: it sends
 * them, then a clean EOF, rather than lose a client's echo.
 *
 *   header:  magic "RINGECHU", version, header_len, total_len, nrecords
 *   record:  kind, fd, bytes_len, body_len, bytes_sum, body_sum, sum,
 *            bytes[bytes_len], body[body_len]
 *
 * A record whose envelope fails its checksum ends the walk: its socket and
 * those after it are found by the new program as sockets left open.
 *
 * Integers are the host's: the two programs run on the same machine. */
#ifndef RINGECHO_UPSTATE_H
#define RINGECHO_UPSTATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define UPSTATE_MAGIC	"RINGECHU"
#define UPSTATE_VERSION 1

enum uprec_kind {
	UPREC_PROGRAM = 1, /* the old program: version, upgrade start, ... */
	UPREC_CONFIG,	   /* the settings it ran with, as text */
	UPREC_COUNTERS,	   /* its counters, to go on from */
	UPREC_LISTENER,	   /* a listening socket */
	UPREC_CONN,	   /* a connection and its unsent echo */
};

struct upstate_header {
	char magic[8];
	uint32_t version;
	uint32_t header_len; /* sizeof(struct upstate_header) as written */
	uint64_t total_len;  /* the whole state, header included */
	uint32_t nrecords;
	uint32_t pad;
};

struct uprec_envelope {
	uint8_t kind;
	uint8_t pad[3];
	int32_t fd;
	uint32_t bytes_len;
	uint32_t body_len;
	uint64_t bytes_sum;
	uint64_t body_sum;
	uint64_t sum; /* of the envelope itself, this field 0 */
};

/* A state being written: a growing buffer of records. */
struct upstate_buf {
	char *data;
	size_t len, cap;
	size_t last; /* where the last record starts */
	uint32_t nrecords;
	bool failed; /* out of memory on the way */
};

/* Room for `more` bytes of records ahead, so that they go in without
 * growing the buffer (and copying it) on the way. */
bool upstate_reserve(struct upstate_buf *b, size_t more);
/* Append one record (bytes may be NULL when bytes_len is 0). */
void upstate_add(struct upstate_buf *b, enum uprec_kind kind, int fd, const void *bytes,
		 uint32_t bytes_len, const void *body, uint32_t body_len);
/* The same in two steps, for bytes written in place: open returns where
 * the bytes_len bytes go (NULL when out of memory), close seals the record. */
char *upstate_add_open(struct upstate_buf *b, enum uprec_kind kind, int fd,
		       uint32_t bytes_len, const void *body, uint32_t body_len);
void upstate_add_close(struct upstate_buf *b);
void upstate_free(struct upstate_buf *b);
/* Write the header (version: UPSTATE_VERSION but in tests) and the records
 * of parts[0..nparts) to fd, at offset 0. 0 or -errno. */
int upstate_write(int fd, const struct upstate_buf *parts, unsigned nparts,
		  uint32_t version);

/* One record as read back. */
struct uprec {
	enum uprec_kind kind;
	int fd;
	const char *bytes; /* NULL when its checksum failed */
	uint32_t bytes_len;
	const char *body; /* NULL when its checksum failed or the version is unknown */
	uint32_t body_len;
};

enum upstate_verdict {
	UPSTATE_OK,
	UPSTATE_UNKNOWN_VERSION, /* records walkable, bodies not readable */
	UPSTATE_DAMAGED,	 /* some checksum failed, or records missing */
	UPSTATE_UNREADABLE,	 /* no header: not a state, or cut short */
};

/* Check the state in data[0..len) and call fn on each record it can find.
 * Returns the verdict; *why gets a phrase for the log. */
enum upstate_verdict upstate_read(const char *data, size_t len,
				  void (*fn)(void *ctx, const struct uprec *r), void *ctx,
				  const char **why);

#endif
