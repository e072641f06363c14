/* SPDX-License-Identifier: MIT */
/* The user_data codec: every type and id survives the round trip, and the
 * two never bleed into each other. */
#include "check.h"
#include "op.h"

int main(void)
{
	const uint64_t ids[] = {
	    0, 1, 2, 0xff, UINT64_C(0x123456789abc), OP_ID_MAX - 1, OP_ID_MAX};

	for (int t = OP_NONE; t < OP_TYPE_MAX; t++) {
		for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
			uint64_t ud = op_encode(t, ids[i]);
			CHECK(op_decode_type(ud) == (enum op_type)t);
			CHECK(op_decode_id(ud) == ids[i]);
		}
	}
	/* An id too large for its bits is truncated, never changes the type. */
	CHECK(op_decode_type(op_encode(OP_SEND, UINT64_MAX)) == OP_SEND);
	/* A zeroed user_data is recognisably no operation. */
	CHECK(op_decode_type(0) == OP_NONE);
	CHECK(op_encode(OP_RECV, 7) != op_encode(OP_SEND, 7));
	return check_done("op codec");
}
