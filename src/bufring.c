/* SPDX-License-Identifier: MIT */
#include "bufring.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>

static void *map_anon(size_t len)
{
	void *p =
	    mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

int bufring_init(struct bufring *b, struct io_uring *ring, uint16_t group, uint32_t count,
		 uint32_t size)
{
	struct io_uring_buf_reg reg;
	size_t ring_len = (size_t)count * sizeof(struct io_uring_buf);
	int ret;

	memset(b, 0, sizeof(*b));
	b->group = group;
	b->count = count;
	b->size = size;
	/* The ring must be page aligned; mmap gives that. The buffers are
	 * touched only when the kernel first fills them, so an idle daemon's
	 * resident memory does not grow with buffer_count. */
	b->br = map_anon(ring_len);
	b->base = map_anon((size_t)count * size);
	if (!b->br || !b->base) {
		ret = -ENOMEM;
		goto err;
	}
	io_uring_buf_ring_init(b->br);
	memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (uintptr_t)b->br;
	reg.ring_entries = count;
	reg.bgid = group;
	ret = io_uring_register_buf_ring(ring, &reg, 0);
	if (ret < 0)
		goto err;
	for (uint32_t i = 0; i < count; i++)
		io_uring_buf_ring_add(b->br, bufring_addr(b, i), size, i,
				      io_uring_buf_ring_mask(count), i);
	io_uring_buf_ring_advance(b->br, count);
	return 0;
err:
	if (b->br)
		munmap(b->br, ring_len);
	if (b->base)
		munmap(b->base, (size_t)count * size);
	b->br = NULL;
	b->base = NULL;
	return ret;
}

void bufring_deinit(struct bufring *b, struct io_uring *ring)
{
	if (!b->br)
		return;
	io_uring_unregister_buf_ring(ring, b->group);
	munmap(b->br, (size_t)b->count * sizeof(struct io_uring_buf));
	munmap(b->base, (size_t)b->count * b->size);
	b->br = NULL;
	b->base = NULL;
}
