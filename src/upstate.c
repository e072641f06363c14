/* SPDX-License-Identifier: MIT */
#include "upstate.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define UPSTATE_MIN_CAPACITY 4096

/* A checksum fast enough for megabytes of unsent echo in the pause of an
 * upgrade (four independent lanes of 8 bytes), good enough to catch a
 * damaged state. */
static uint64_t checksum(const void *p, size_t len)
{
	const unsigned char *c = p;
	uint64_t h[4] = {UINT64_C(0x9e3779b97f4a7c15) ^ len, UINT64_C(0xbf58476d1ce4e5b9),
			 UINT64_C(0x94d049bb133111eb), UINT64_C(0x2545f4914f6cdd1d)};
	uint64_t w[4], tail = 0, r;

	for (; len >= 32; c += 32, len -= 32) {
		memcpy(w, c, 32);
		for (int i = 0; i < 4; i++) {
			h[i] = (h[i] ^ w[i]) * UINT64_C(0xff51afd7ed558ccd);
			h[i] ^= h[i] >> 31;
		}
	}
	for (; len >= 8; c += 8, len -= 8) {
		memcpy(w, c, 8);
		h[0] = (h[0] ^ w[0]) * UINT64_C(0xff51afd7ed558ccd);
		h[0] ^= h[0] >> 31;
	}
	if (len)
		memcpy(&tail, c, len);
	r = h[0] ^ tail;
	for (int i = 1; i < 4; i++)
		r = (r ^ h[i]) * UINT64_C(0xc4ceb9fe1a85ec53) + (uint64_t)i;
	r *= UINT64_C(0xc4ceb9fe1a85ec53);
	return r ^ (r >> 29);
}

static bool reserve(struct upstate_buf *b, size_t more)
{
	if (b->failed)
		return false;
	if (b->len + more > b->cap) {
		size_t cap = b->cap ? b->cap : UPSTATE_MIN_CAPACITY;
		char *d;
		while (cap < b->len + more)
			cap *= 2;
		if (!(d = realloc(b->data, cap))) {
			b->failed = true;
			return false;
		}
		b->data = d;
		b->cap = cap;
	}
	return true;
}

bool upstate_reserve(struct upstate_buf *b, size_t more)
{
	return reserve(b, more);
}

char *upstate_add_open(struct upstate_buf *b, enum uprec_kind kind, int fd,
		       uint32_t bytes_len, const void *body, uint32_t body_len)
{
	struct uprec_envelope e = {
	    .kind = (uint8_t)kind,
	    .fd = fd,
	    .bytes_len = bytes_len,
	    .body_len = body_len,
	    .body_sum = checksum(body, body_len),
	};
	char *bytes;

	if (!reserve(b, sizeof(e) + bytes_len + body_len))
		return NULL;
	b->last = b->len;
	memcpy(b->data + b->len, &e, sizeof(e));
	b->len += sizeof(e);
	bytes = b->data + b->len;
	b->len += bytes_len;
	if (body_len)
		memcpy(b->data + b->len, body, body_len);
	b->len += body_len;
	b->nrecords++;
	return bytes;
}

void upstate_add_close(struct upstate_buf *b)
{
	struct uprec_envelope e;

	if (b->failed)
		return;
	memcpy(&e, b->data + b->last, sizeof(e));
	e.bytes_sum = checksum(b->data + b->last + sizeof(e), e.bytes_len);
	e.sum = 0;
	e.sum = checksum(&e, sizeof(e));
	memcpy(b->data + b->last, &e, sizeof(e));
}

void upstate_add(struct upstate_buf *b, enum uprec_kind kind, int fd, const void *bytes,
		 uint32_t bytes_len, const void *body, uint32_t body_len)
{
	char *to = upstate_add_open(b, kind, fd, bytes_len, body, body_len);

	if (!to)
		return;
	if (bytes_len)
		memcpy(to, bytes, bytes_len);
	upstate_add_close(b);
}

void upstate_free(struct upstate_buf *b)
{
	free(b->data);
	memset(b, 0, sizeof(*b));
}

static int write_all(int fd, const void *p, size_t len)
{
	const char *c = p;

	while (len) {
		ssize_t n = write(fd, c, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		c += n;
		len -= (size_t)n;
	}
	return 0;
}

int upstate_write(int fd, const struct upstate_buf *parts, unsigned nparts,
		  uint32_t version)
{
	struct upstate_header h = {
	    .version = version,
	    .header_len = sizeof(h),
	    .total_len = sizeof(h),
	};
	int ret;

	for (unsigned i = 0; i < nparts; i++) {
		if (parts[i].failed)
			return -ENOMEM;
		h.total_len += parts[i].len;
		h.nrecords += parts[i].nrecords;
	}
	memcpy(h.magic, UPSTATE_MAGIC, sizeof(h.magic));
	/* One size up front: the memfd grows once. */
	if (ftruncate(fd, (off_t)h.total_len) < 0)
		return -errno;
	ret = write_all(fd, &h, sizeof(h));
	for (unsigned i = 0; i < nparts && !ret; i++)
		ret = write_all(fd, parts[i].data, parts[i].len);
	return ret;
}

/* The envelope at data[at..len), if it is whole and sound. */
static bool envelope_at(const char *data, size_t at, size_t len, struct uprec_envelope *e)
{
	uint64_t sum;

	if (len - at < sizeof(*e))
		return false;
	memcpy(e, data + at, sizeof(*e));
	sum = e->sum;
	e->sum = 0;
	if (checksum(e, sizeof(*e)) != sum)
		return false;
	e->sum = sum;
	return (uint64_t)e->bytes_len + e->body_len <= len - at - sizeof(*e);
}

enum upstate_verdict upstate_read(const char *data, size_t len,
				  void (*fn)(void *ctx, const struct uprec *r), void *ctx,
				  const char **why)
{
	enum upstate_verdict v = UPSTATE_OK;
	struct upstate_header h;
	struct uprec_envelope e;
	uint32_t found = 0;
	size_t at;

	*why = "it is not a state, or it is cut short";
	if (len < sizeof(h))
		return UPSTATE_UNREADABLE;
	memcpy(&h, data, sizeof(h));
	if (memcmp(h.magic, UPSTATE_MAGIC, sizeof(h.magic)) != 0 ||
	    h.header_len < sizeof(h) || h.header_len > len)
		return UPSTATE_UNREADABLE;
	*why = "read in full";
	if (h.version != UPSTATE_VERSION) {
		*why = "it is of a format version this program does not know";
		v = UPSTATE_UNKNOWN_VERSION;
	}
	for (at = h.header_len; at < len && envelope_at(data, at, len, &e); found++) {
		struct uprec r = {
		    .kind = (enum uprec_kind)e.kind,
		    .fd = e.fd,
		    .bytes = data + at + sizeof(e),
		    .bytes_len = e.bytes_len,
		    .body = data + at + sizeof(e) + e.bytes_len,
		    .body_len = e.body_len,
		};

		at += sizeof(e) + e.bytes_len + e.body_len;
		if (checksum(r.bytes, r.bytes_len) != e.bytes_sum)
			r.bytes = NULL;
		if (checksum(r.body, r.body_len) != e.body_sum ||
		    v == UPSTATE_UNKNOWN_VERSION)
			r.body = NULL;
		if ((!r.bytes || !r.body) && v == UPSTATE_OK) {
			*why = "parts of it are damaged";
			v = UPSTATE_DAMAGED;
		}
		fn(ctx, &r);
	}
	if ((at != len || found != h.nrecords || h.total_len != len) &&
	    v != UPSTATE_UNKNOWN_VERSION) {
		*why = "records are missing or damaged";
		v = UPSTATE_DAMAGED;
	}
	return v;
}
