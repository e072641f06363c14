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

/* Fills *out for process pid; returns 0 or -errno. */
int proc_cpu_read(int pid, struct proc_cpu *out);

/* Busy (non-idle) and stolen seconds of all CPUs since boot, from /proc/stat:
 * what else ran during a window, and what the hypervisor took. */
int proc_machine_busy(double *busy_s, double *steal_s);

#endif
