/* SPDX-License-Identifier: MIT */
/* The connection table against a plain array model, through growth and
 * heavy churn (insert, lookup, delete in random order). */
#include "check.h"
#include "conn_table.h"

#include <stdint.h>
#include <stdlib.h>

#define N 50000

static struct conn *fake(uint64_t id)
{
	return (struct conn *)(uintptr_t)(id * 16);
}

static void test_basic(void)
{
	struct conn_table t;

	CHECK(conn_table_init(&t, 0) == 0);
	CHECK(conn_table_lookup(&t, 1) == NULL);
	CHECK(conn_table_insert(&t, 1, fake(1)) == 0);
	CHECK(conn_table_lookup(&t, 1) == fake(1));
	CHECK(conn_table_remove(&t, 1) == fake(1));
	CHECK(conn_table_remove(&t, 1) == NULL);
	CHECK(conn_table_lookup(&t, 1) == NULL);
	CHECK(t.count == 0);
	conn_table_deinit(&t);
}

static void test_churn(void)
{
	static uint8_t present[N + 1];
	struct conn_table t;
	size_t count = 0, capacity_before;

	CHECK(conn_table_init(&t, 16) == 0);
	capacity_before = t.mask + 1;
	srand(12345);
	for (int round = 0; round < 400000; round++) {
		uint64_t id = 1 + (uint64_t)rand() % N;
		if (rand() % 3 && !present[id]) {
			CHECK(conn_table_insert(&t, id, fake(id)) == 0);
			present[id] = 1;
			count++;
		} else if (present[id]) {
			CHECK(conn_table_remove(&t, id) == fake(id));
			present[id] = 0;
			count--;
		}
		CHECK(t.count == count);
	}
	CHECK(t.mask + 1 > capacity_before); /* it grew */
	for (uint64_t id = 1; id <= N; id++)
		CHECK(conn_table_lookup(&t, id) == (present[id] ? fake(id) : NULL));
	size_t seen = 0;
	conn_table_for_each(&t, slot)
	{
		CHECK(present[slot->id]);
		seen++;
	}
	CHECK(seen == count);
	conn_table_deinit(&t);
}

/* Sequential ids, as the daemon issues them: deleting the old ones while
 * inserting new ones must never lose an entry behind a hole. */
static void test_sliding_window(void)
{
	struct conn_table t;
	const uint64_t window = 1000;

	CHECK(conn_table_init(&t, 0) == 0);
	for (uint64_t id = 1; id < 200000; id++) {
		CHECK(conn_table_insert(&t, id, fake(id)) == 0);
		if (id > window)
			CHECK(conn_table_remove(&t, id - window) == fake(id - window));
		if (id % 997 == 0)
			for (uint64_t k = id > window ? id - window + 1 : 1; k <= id; k++)
				CHECK(conn_table_lookup(&t, k) == fake(k));
	}
	CHECK(t.count == window);
	conn_table_deinit(&t);
}

int main(void)
{
	test_basic();
	test_churn();
	test_sliding_window();
	return check_done("conn table");
}
