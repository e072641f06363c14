/* SPDX-License-Identifier: MIT */
/* The live upgrade's state format (upstate.c): what is written is read back
 * whole; and whatever is wrong with a state, every record whose envelope
 * holds is still found with its fd, and its bytes whenever their own
 * checksum holds: a damaged body, an unknown version, a state cut short or
 * with bytes to spare, a damaged envelope (the walk stops there), no
 * header at all. */
#include "check.h"
#include "upstate.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define NREC 40

struct seen {
	unsigned n, with_bytes, with_body;
	int fd[NREC + 8];
	int bytes_ok[NREC + 8];
};

/* Record i: fd 100 + i, i * 37 bytes of a pattern, a 24-byte body. */
static void pattern(unsigned i, char *bytes, char *body)
{
	for (unsigned k = 0; k < i * 37; k++)
		bytes[k] = (char)(i * 7 + k);
	for (unsigned k = 0; k < 24; k++)
		body[k] = (char)(i + k * 3);
}

static void on_record(void *ctx, const struct uprec *r)
{
	struct seen *s = ctx;
	char bytes[NREC * 37], body[24];
	unsigned i = (unsigned)(r->fd - 100);

	if (s->n >= NREC + 8)
		return;
	s->fd[s->n] = r->fd;
	if (i < NREC) {
		pattern(i, bytes, body);
		s->bytes_ok[s->n] = r->bytes && r->bytes_len == i * 37 &&
				    memcmp(r->bytes, bytes, r->bytes_len) == 0;
		if (r->body)
			CHECK(r->body_len == 24 && memcmp(r->body, body, 24) == 0);
	}
	s->with_bytes += r->bytes != NULL;
	s->with_body += r->body != NULL;
	s->n++;
}

/* The state of NREC records (in two parts, as loop 0 and another loop
 * write it), as written to a memfd: its bytes in *len. */
static char *make_state(size_t *len, uint32_t version)
{
	struct upstate_buf parts[2] = {{0}};
	char bytes[NREC * 37], body[24];
	int fd = memfd_create("test", 0);
	char *data;

	CHECK(upstate_reserve(&parts[1], 1000));
	for (unsigned i = 0; i < NREC; i++) {
		pattern(i, bytes, body);
		if (i % 2) {
			upstate_add(&parts[i < NREC / 2 ? 0 : 1], UPREC_CONN,
				    100 + (int)i, bytes, i * 37, body, sizeof(body));
		} else {
			char *to =
			    upstate_add_open(&parts[i < NREC / 2 ? 0 : 1], UPREC_CONN,
					     100 + (int)i, i * 37, body, sizeof(body));
			CHECK(to != NULL);
			memcpy(to, bytes, i * 37);
			upstate_add_close(&parts[i < NREC / 2 ? 0 : 1]);
		}
	}
	CHECK(upstate_write(fd, parts, 2, version) == 0);
	*len = (size_t)lseek(fd, 0, SEEK_END);
	data = malloc(*len + 16);
	CHECK(pread(fd, data, *len, 0) == (ssize_t)*len);
	close(fd);
	upstate_free(&parts[0]);
	upstate_free(&parts[1]);
	return data;
}

static enum upstate_verdict read_state(const char *data, size_t len, struct seen *s)
{
	const char *why = NULL;
	enum upstate_verdict v;

	memset(s, 0, sizeof(*s));
	v = upstate_read(data, len, on_record, s, &why);
	CHECK(why != NULL);
	return v;
}

static unsigned bytes_ok(const struct seen *s)
{
	unsigned n = 0;

	for (unsigned i = 0; i < s->n; i++)
		n += s->bytes_ok[i];
	return n;
}

/* Where record i's envelope starts. */
static size_t record_at(const char *data, unsigned i)
{
	struct upstate_header h;
	size_t at;

	memcpy(&h, data, sizeof(h));
	at = h.header_len;
	for (unsigned k = 0; k < i; k++) {
		struct uprec_envelope e;
		memcpy(&e, data + at, sizeof(e));
		at += sizeof(e) + e.bytes_len + e.body_len;
	}
	return at;
}

int main(void)
{
	struct seen s;
	size_t len, at;
	char *data = make_state(&len, UPSTATE_VERSION);

	/* Whole: every record, in order, bytes and bodies. */
	CHECK(read_state(data, len, &s) == UPSTATE_OK);
	CHECK(s.n == NREC && bytes_ok(&s) == NREC && s.with_body == NREC);
	for (unsigned i = 0; i < s.n; i++)
		CHECK(s.fd[i] == 100 + (int)i);

	/* A body damaged: that body is lost, every fd and all bytes kept. */
	at = record_at(data, 5) + sizeof(struct uprec_envelope) + 5 * 37;
	data[at] ^= 1;
	CHECK(read_state(data, len, &s) == UPSTATE_DAMAGED);
	CHECK(s.n == NREC && bytes_ok(&s) == NREC && s.with_body == NREC - 1);
	data[at] ^= 1;

	/* Bytes damaged: those bytes are not handed out, the rest are. */
	at = record_at(data, 7) + sizeof(struct uprec_envelope) + 3;
	data[at] ^= 1;
	CHECK(read_state(data, len, &s) == UPSTATE_DAMAGED);
	CHECK(s.n == NREC && bytes_ok(&s) == NREC - 1 && s.with_bytes == NREC - 1);
	data[at] ^= 1;

	/* An envelope damaged: the records before it are found. */
	at = record_at(data, 12) + 8; /* its bytes_len */
	data[at] ^= 0x40;
	CHECK(read_state(data, len, &s) == UPSTATE_DAMAGED);
	CHECK(s.n == 12 && bytes_ok(&s) == 12);
	data[at] ^= 0x40;

	/* Cut short in the last record, or with bytes to spare. */
	CHECK(read_state(data, len - 1, &s) == UPSTATE_DAMAGED);
	CHECK(s.n == NREC - 1 && bytes_ok(&s) == NREC - 1);
	CHECK(read_state(data, len + 3, &s) == UPSTATE_DAMAGED);
	CHECK(s.n == NREC && bytes_ok(&s) == NREC);

	/* No header. */
	data[0] ^= 1;
	CHECK(read_state(data, len, &s) == UPSTATE_UNREADABLE && s.n == 0);
	data[0] ^= 1;
	CHECK(read_state(data, 10, &s) == UPSTATE_UNREADABLE && s.n == 0);
	free(data);

	/* A version this program does not know: no body, every fd and byte. */
	data = make_state(&len, UPSTATE_VERSION + 1);
	CHECK(read_state(data, len, &s) == UPSTATE_UNKNOWN_VERSION);
	CHECK(s.n == NREC && bytes_ok(&s) == NREC && s.with_body == 0);
	free(data);
	return check_done("upstate");
}
