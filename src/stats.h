/* SPDX-License-Identifier: MIT */
/* Counters for SIGUSR1's log line and systemd's STATUS=. */
#ifndef RINGECHO_STATS_H
#define RINGECHO_STATS_H

#include <stddef.h>
#include <stdint.h>

/* Why a datagram got no reply. */
enum udp_drop {
	UDP_DROP_TRUNCATED, /* larger than udp_max_datagram */
	UDP_DROP_LOW_PORT,  /* from a port below udp_min_source_port */
	UDP_DROP_LOOP,	    /* from one of our own UDP ports */
	UDP_DROP_BROADCAST, /* sent to a broadcast or multicast address */
	UDP_DROP_RATE,	    /* over udp_max_rate_per_ip */
	UDP_DROP_BUSY,	    /* its reply could not leave at once */
	UDP_DROP_ERROR,	    /* its reply failed otherwise */
	UDP_DROP_REASONS
};

/* A live upgrade hands these over as they lie in memory (upgrade.h): add
 * counters at the end only, and bump UPSTATE_VERSION to move one. */
struct stats {
	uint64_t conns_total;	  /* accepted and served */
	uint64_t bytes;		  /* echoed (sent back) */
	uint64_t messages;	  /* receive completions with data */
	uint64_t refused_max;	  /* closed at once: max_connections */
	uint64_t refused_per_ip;  /* closed at once: max_connections_per_ip */
	uint64_t idle_closed;	  /* closed by idle_timeout_ms */
	uint64_t bufring_empty;	  /* recvs that found no provided buffer */
	uint64_t starved_retries; /* ... re-armed once buffers came back */
	uint64_t short_sends;	  /* sends resumed after a partial write */
	uint64_t chained_sends;	  /* sends of several held buffers at once */
	uint64_t accept_paused;	  /* accept pauses on EMFILE/ENFILE/ENOMEM */
	uint64_t send_timeouts;	  /* reset by send_timeout_ms */
	uint64_t handed_off;	  /* accepted here, served by a lighter loop */
	uint64_t upgrades;	  /* live upgrades this daemon went through */
	/* How connections ended (refused ones not counted): */
	uint64_t conns_closed;	    /* all of them */
	uint64_t closed_by_client;  /* the client's EOF, its echo complete */
	uint64_t closed_idle;	    /* cut by idle_timeout_ms, then closed */
	uint64_t closed_drain_idle; /* idle at shutdown: ended at once */
	uint64_t closed_cut;	    /* cut at the shutdown deadline, then closed */
	uint64_t closed_reset;	    /* reset, by either side, or an error */
	uint64_t udp_datagrams;	    /* echoed */
	uint64_t udp_bytes;	    /* ... and their bytes */
	uint64_t udp_dropped[UDP_DROP_REASONS];
};

/* to += from, counter by counter (they are all uint64_t). */
static inline void stats_add(struct stats *to, const struct stats *from)
{
	uint64_t *t = (uint64_t *)to;
	const uint64_t *f = (const uint64_t *)from;

	for (size_t i = 0; i < sizeof(*to) / sizeof(uint64_t); i++)
		t[i] += f[i];
}

_Static_assert(sizeof(struct stats) % sizeof(uint64_t) == 0, "stats: only uint64_t");

#endif
