/* SPDX-License-Identifier: MIT */
#include "admission.h"

#include <errno.h>

int admission_init(struct admission *l)
{
	atomic_init(&l->total, 0);
	atomic_init(&l->released, 0);
	if (pthread_mutex_init(&l->lock, NULL) != 0)
		return -ENOMEM;
	if (peer_table_init(&l->peers) < 0) {
		pthread_mutex_destroy(&l->lock);
		return -ENOMEM;
	}
	return 0;
}

void admission_deinit(struct admission *l)
{
	peer_table_deinit(&l->peers);
	pthread_mutex_destroy(&l->lock);
}

enum admit_verdict admission_take(struct admission *l, const struct peer_key *peer,
				  unsigned max, unsigned per_ip)
{
	enum admit_verdict v = ADMIT_OK;

	/* Taken first and given back if refused: two loops admitting at once
	 * can never both take the last place. */
	if (atomic_fetch_add(&l->total, 1) >= max) {
		atomic_fetch_sub(&l->total, 1);
		return ADMIT_OVER_MAX;
	}
	if (!peer->valid)
		return ADMIT_OK;
	pthread_mutex_lock(&l->lock);
	if (per_ip && peer_count(&l->peers, peer) >= per_ip)
		v = ADMIT_OVER_PER_IP;
	else if (peer_add(&l->peers, peer) < 0)
		v = ADMIT_NO_MEMORY;
	pthread_mutex_unlock(&l->lock);
	if (v != ADMIT_OK)
		atomic_fetch_sub(&l->total, 1);
	return v;
}

void admission_force(struct admission *l, const struct peer_key *peer)
{
	atomic_fetch_add(&l->total, 1);
	if (peer->valid) {
		pthread_mutex_lock(&l->lock);
		/* Out of memory, it goes uncounted per address; removing an
		 * address the table lacks does nothing. */
		(void)peer_add(&l->peers, peer);
		pthread_mutex_unlock(&l->lock);
	}
}

void admission_release(struct admission *l, const struct peer_key *peer)
{
	if (peer->valid) {
		pthread_mutex_lock(&l->lock);
		peer_remove(&l->peers, peer);
		pthread_mutex_unlock(&l->lock);
	}
	atomic_fetch_sub(&l->total, 1);
	atomic_fetch_add(&l->released, 1);
}

uint64_t admission_released(struct admission *l)
{
	return atomic_load(&l->released);
}

unsigned admission_total(struct admission *l)
{
	return atomic_load(&l->total);
}
