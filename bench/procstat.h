/* SPDX-License-Identifier: MIT */
/* SPDX-License-Identifier: MIT */
/* CPU time of another process, read from /proc, for CPU-per-message figures. */
#ifndef BENCH_PROCSTAT_H
#define BENCH_PROCSTAT_H

struct proc_cpu {
	double user_s; /* /proc/PID/stat: all threads, exited ones too */
	double sys_s;
	double tasks_s;	    /* sum over /proc/PID/task/x/stat: live threads only */
	unsigned int tasks; /* live threads, io_uring's iou-sqp/iou-wrk included */
};

/* One CPU's time since boot, from its "cpuN" line in /proc/stat. */
struct core_time {
	double busy_s;	  /* user, nice, system, irq and softirq */
	double softirq_s; /* irq and softirq alone */
};

/* Fills *out for process pid; returns 0 or -errno. */
int proc_cpu_read(int pid, struct proc_cpu *out);

/* Busy (non-idle) and stolen seconds of all CPUs since boot, from /proc/stat:
 * what else ran during a window, and what the hypervisor took. */
int proc_machine_busy(double *busy_s, double *steal_s);

/* Fills *out for CPU cpu: all that ran on it, the network's softirq work
 * included, which on loopback is not always charged to the process whose
 * send raised it. Returns 0 or -errno. */
int proc_core_busy(int cpu, struct core_time *out);

#endif
