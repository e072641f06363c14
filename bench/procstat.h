/* SPDX-License-Identifier: MIT */
/* SPDX-License-Identifier: MIT */
/* CPU time of another process, read from /proc, for CPU-per-message figures. */
#ifndef BENCH_PROCSTAT_H
#define BENCH_PROCSTAT_H

#include <stdint.h>

#define CPU_LIST_MAX 1024 /* as glibc's cpu_set_t */

struct proc_cpu {
	double user_s; /* /proc/PID/stat: all threads, exited ones too */
	double sys_s;
	double tasks_s;	    /* sum over /proc/PID/task/x/stat: live threads only */
	unsigned int tasks; /* live threads, io_uring's iou-sqp/iou-wrk included */
};

/* A set of CPUs, as taskset -c writes it: "0", "0,2", "0-3,8". */
struct cpu_list {
	uint64_t bits[CPU_LIST_MAX / 64];
	unsigned int count;
};

/* The CPUs' time since boot, summed over their "cpuN" lines in /proc/stat.
 * Busy over a window is ncpus x its length - idle - steal: the kernel times
 * idle (and iowait) at every idle entry and exit under NO_HZ, but it only
 * samples the busy fields at each tick, and the samples miss much of a core
 * that idles between messages, many times a tick: in one 3 s window here,
 * 1.83 s of busy ticks for 2.11 s not idle, 2.02 s of it in the server
 * process alone. /proc/stat shows idle in 10 ms units: +-1% of a core over
 * a 2 s window. */
struct core_time {
	double idle_s;	      /* idle and iowait (io_uring waits count as iowait) */
	double steal_s;	      /* taken by the hypervisor */
	double ticked_busy_s; /* user, nice, system, irq, softirq: tick samples */
	double softirq_s;     /* irq and softirq, tick samples */
	unsigned int ncpus;   /* lines summed */
};

/* Fills *out for process pid; returns 0 or -errno. */
int proc_cpu_read(int pid, struct proc_cpu *out);

/* Parses a CPU list into *out; returns 0, or -EINVAL (nothing set then). */
int cpu_list_parse(const char *text, struct cpu_list *out);

/* Fills *out with the sum over the CPUs of cpus (NULL: all online CPUs): all
 * that ran on them, the network's softirq work included, which on loopback
 * is not always charged to the process whose send raised it. Returns 0 or
 * -errno (-ENOENT: a CPU of the list has no line, e.g. it is offline). */
int proc_cores_time(const struct cpu_list *cpus, struct core_time *out);

#endif
