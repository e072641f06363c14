/* SPDX-License-Identifier: MIT */
/* The clocks of a loop's connections, run from its tick: idle_timeout_ms
 * (a silent client that owes nothing is cut), send_timeout_ms (a client
 * whose echo stopped moving is reset) and the linger of refused clients. */
#ifndef RINGECHO_TIMEOUTS_H
#define RINGECHO_TIMEOUTS_H

struct worker;

/* End what has expired. */
void timeouts_tick(struct worker *w);

#endif
