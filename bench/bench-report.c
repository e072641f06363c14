/* SPDX-License-Identifier: MIT */
// SPDX-License-Identifier: MIT
/* echo-bench's output: a short text report, or one JSON object. */
#include "echo-bench.h"

#include <stdio.h>

static const char *const mode_names[] = {"pingpong", "pipelined", "hold"};
static const char *const proto_names[] = {"tcp", "udp"};

struct figures {
	double secs, rate, client_cpu;
	double srv_user, srv_sys, srv_tasks, srv_cpu;
	/* The server's cores: all that ran there; of it, what the ticks saw. */
	double core_busy, core_ticked, core_softirq;
	double others, steal; /* CPU seconds of everything else, and stolen */
	uint64_t p50, p90, p99, p999, mean;
};

/* Seconds the CPUs of a and z were not idle between the two reads, secs apart. */
static double busy_between(const struct core_time *a, const struct core_time *z,
			   double secs)
{
	return a->ncpus * secs - (z->idle_s - a->idle_s) - (z->steal_s - a->steal_s);
}

static void compute(const struct bench *b, struct figures *f)
{
	const struct window *w = &b->win;
	const struct hist *h = &b->hist;

	f->secs = (double)(w->t1 - w->t0) / 1e9;
	f->rate = f->secs > 0 ? (double)w->msgs / f->secs : 0;
	f->client_cpu = w->client_cpu1 - w->client_cpu0;
	f->srv_user = w->srv1.user_s - w->srv0.user_s;
	f->srv_sys = w->srv1.sys_s - w->srv0.sys_s;
	f->srv_tasks = w->srv1.tasks_s - w->srv0.tasks_s;
	f->srv_cpu = f->srv_user + f->srv_sys;
	f->core_busy = busy_between(&w->core0, &w->core1, f->secs);
	f->core_ticked = w->core1.ticked_busy_s - w->core0.ticked_busy_s;
	f->core_softirq = w->core1.softirq_s - w->core0.softirq_s;
	f->others = w->mach_ok ? busy_between(&w->mach0, &w->mach1, f->secs) -
				     f->client_cpu - (w->srv_ok ? f->srv_cpu : 0)
			       : 0;
	f->steal = w->mach_ok ? w->mach1.steal_s - w->mach0.steal_s : 0;
	f->p50 = hist_quantile(h, 0.50);
	f->p90 = hist_quantile(h, 0.90);
	f->p99 = hist_quantile(h, 0.99);
	f->p999 = hist_quantile(h, 0.999);
	f->mean = h->count ? h->sum / h->count : 0;
}

/* Datagrams given up on in the window, and the whole run's balance. */
static void print_udp_text(const struct bench *b)
{
	const struct udp_counts *u = &b->udp;

	printf("  udp:      in the window %llu timeouts, %llu late echoes; "
	       "run: %llu sent, %llu answered, %llu late, %lld lost\n",
	       (unsigned long long)(b->win.udp1.timeouts - b->win.udp0.timeouts),
	       (unsigned long long)(b->win.udp1.late - b->win.udp0.late),
	       (unsigned long long)u->sent, (unsigned long long)u->answered,
	       (unsigned long long)u->late, (long long)(u->sent - u->answered - u->late));
}

static void print_text(const struct bench *b, const struct figures *f)
{
	const struct opts *o = &b->o;

	printf("%s %s: %u %s, %u B messages, depth %u, %.2f s measured\n",
	       proto_names[o->proto], mode_names[o->mode], o->conns,
	       o->proto == PROTO_UDP ? "clients" : "connections", o->size, o->depth,
	       f->secs);
	printf("  messages: %llu (%.0f msg/s, %.1f MB/s)\n",
	       (unsigned long long)b->win.msgs, f->rate, f->rate * o->size / 1e6);
	printf("  latency:  p50 %.1f us, p90 %.1f us, p99 %.1f us, p99.9 %.1f us, "
	       "max %.1f us, mean %.1f us\n",
	       f->p50 / 1e3, f->p90 / 1e3, f->p99 / 1e3, f->p999 / 1e3, b->hist.max / 1e3,
	       f->mean / 1e3);
	printf("  client:   CPU %.2f s (%.0f %% of a core)\n", f->client_cpu,
	       f->secs > 0 ? 100 * f->client_cpu / f->secs : 0);
	printf("  machine:  %.2f CPU-s used by other processes, %.2f s stolen\n",
	       f->others, f->steal);
	if (o->proto == PROTO_UDP)
		print_udp_text(b);
	if (b->win.core_ok)
		printf("  cpus %s:   busy %.2f s (ticks: %.2f, softirq %.2f), %.0f "
		       "msg/busy-s\n",
		       o->server_cpus_text, f->core_busy, f->core_ticked, f->core_softirq,
		       f->core_busy > 0 ? (double)b->win.msgs / f->core_busy : 0);
	if (!b->win.srv_ok)
		return;
	printf("  server:   CPU %.2f s (user %.2f + sys %.2f), %d threads, %.2f us/msg, "
	       "%.0f msg/CPU-s\n",
	       f->srv_cpu, f->srv_user, f->srv_sys, b->win.srv1.tasks,
	       b->win.msgs ? 1e6 * f->srv_cpu / (double)b->win.msgs : 0,
	       f->srv_cpu > 0 ? (double)b->win.msgs / f->srv_cpu : 0);
}

static void print_server_json(const struct bench *b, const struct figures *f)
{
	if (!b->win.srv_ok) {
		printf("\"server\":null");
		return;
	}
	printf("\"server\":{\"pid\":%d,\"user_s\":%.3f,\"sys_s\":%.3f,\"cpu_s\":%.3f,"
	       "\"tasks_cpu_s\":%.3f,\"threads\":%u,\"cpu_ns_per_msg\":%.1f,"
	       "\"msgs_per_cpu_s\":%.1f}",
	       b->o.server_pid, f->srv_user, f->srv_sys, f->srv_cpu, f->srv_tasks,
	       b->win.srv1.tasks,
	       b->win.msgs ? 1e9 * f->srv_cpu / (double)b->win.msgs : 0,
	       f->srv_cpu > 0 ? (double)b->win.msgs / f->srv_cpu : 0);
}

static void print_core_json(const struct bench *b, const struct figures *f)
{
	if (!b->win.core_ok) {
		printf("\"server_core\":null,");
		return;
	}
	printf("\"server_core\":{\"cpus\":\"%s\",\"ncpus\":%u,\"busy_s\":%.3f,"
	       "\"ticked_busy_s\":%.3f,\"softirq_s\":%.3f,\"msgs_per_busy_s\":%.1f},",
	       b->o.server_cpus_text, b->o.server_cpus.count, f->core_busy,
	       f->core_ticked, f->core_softirq,
	       f->core_busy > 0 ? (double)b->win.msgs / f->core_busy : 0);
}

/* lost = never echoed, at the end of the run (duplicates count as late). */
static void print_udp_json(const struct bench *b)
{
	const struct udp_counts *u = &b->udp;

	if (b->o.proto != PROTO_UDP)
		return;
	printf("\"udp\":{\"timeout_ms\":%.0f,\"timeouts\":%llu,\"late\":%llu,"
	       "\"run_sent\":%llu,\"run_answered\":%llu,\"run_late\":%llu,"
	       "\"run_timeouts\":%llu,\"run_lost\":%lld},",
	       (double)b->o.timeout_ns / 1e6,
	       (unsigned long long)(b->win.udp1.timeouts - b->win.udp0.timeouts),
	       (unsigned long long)(b->win.udp1.late - b->win.udp0.late),
	       (unsigned long long)u->sent, (unsigned long long)u->answered,
	       (unsigned long long)u->late, (unsigned long long)u->timeouts,
	       (long long)(u->sent - u->answered - u->late));
}

static void print_json(const struct bench *b, const struct figures *f)
{
	const struct opts *o = &b->o;

	printf(
	    "{\"protocol\":\"%s\",\"mode\":\"%s\",\"connections\":%u,\"size\":%u,"
	    "\"depth\":%u,\"sources\":%u,"
	    "\"window_s\":%.4f,\"messages\":%llu,\"msgs_per_s\":%.1f,\"bytes_per_s\":%."
	    "1f,",
	    proto_names[o->proto], mode_names[o->mode], o->conns, o->size, o->depth,
	    o->sources, f->secs, (unsigned long long)b->win.msgs, f->rate,
	    f->rate * o->size);
	printf("\"latency_ns\":{\"p50\":%llu,\"p90\":%llu,\"p99\":%llu,\"p999\":%llu,"
	       "\"max\":%llu,\"mean\":%llu,\"count\":%llu},",
	       (unsigned long long)f->p50, (unsigned long long)f->p90,
	       (unsigned long long)f->p99, (unsigned long long)f->p999,
	       (unsigned long long)b->hist.max, (unsigned long long)f->mean,
	       (unsigned long long)b->hist.count);
	printf("\"client_cpu_s\":%.3f,\"others_cpu_s\":%.3f,\"steal_s\":%.3f,",
	       f->client_cpu, f->others, f->steal);
	print_udp_json(b);
	print_core_json(b, f);
	print_server_json(b, f);
	printf("}\n");
}

static void print_hold(const struct bench *b)
{
	double secs = (double)(b->connect_t1 - b->connect_t0) / 1e9;

	if (b->o.json)
		printf("{\"mode\":\"hold\",\"connections\":%u,\"held\":%u,\"size\":%u,"
		       "\"sources\":%u,\"connect_s\":%.3f}\n",
		       b->o.conns, b->settled, b->o.size, b->o.sources, secs);
	else if (!b->o.quiet)
		printf("hold: %u of %u connections held (connected in %.2f s)\n",
		       b->settled, b->o.conns, secs);
}

void report_print(const struct bench *b)
{
	struct figures f;

	if (b->o.mode == MODE_HOLD) {
		print_hold(b);
		fflush(stdout);
		return;
	}
	compute(b, &f);
	if (b->o.json)
		print_json(b, &f);
	else if (!b->o.quiet)
		print_text(b, &f);
	fflush(stdout);
}
