/* SPDX-License-Identifier: MIT */
// SPDX-License-Identifier: MIT
#include "procstat.h"

#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* utime and stime (fields 14 and 15 of proc(5)) in clock ticks. */
static int read_stat_times(const char *path, unsigned long long *ut,
			   unsigned long long *st)
{
	char buf[1024], *p;
	FILE *f = fopen(path, "re");
	size_t n;

	if (!f)
		return -errno;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* The command name may hold spaces and parentheses: parse after the last ')'. */
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
			 ut, st) != 2)
		return -EINVAL;
	return 0;
}

static double sum_tasks(int pid, unsigned int *count)
{
	char path[64];
	unsigned long long ut, st, ticks = 0;
	struct dirent *de;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%d/task", pid);
	d = opendir(path);
	*count = 0;
	if (!d)
		return 0;
	while ((de = readdir(d))) {
		char tpath[300];

		if (de->d_name[0] == '.')
			continue;
		snprintf(tpath, sizeof(tpath), "/proc/%d/task/%s/stat", pid, de->d_name);
		if (read_stat_times(tpath, &ut, &st) == 0) {
			ticks += ut + st;
			(*count)++;
		}
	}
	closedir(d);
	return (double)ticks / (double)sysconf(_SC_CLK_TCK);
}

int proc_cpu_read(int pid, struct proc_cpu *out)
{
	char path[64];
	unsigned long long ut, st;
	double hz = (double)sysconf(_SC_CLK_TCK);
	int err;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	err = read_stat_times(path, &ut, &st);
	if (err)
		return err;
	out->user_s = (double)ut / hz;
	out->sys_s = (double)st / hz;
	out->tasks_s = sum_tasks(pid, &out->tasks);
	return 0;
}

static bool cpu_list_has(const struct cpu_list *l, unsigned long cpu)
{
	return cpu < CPU_LIST_MAX && (l->bits[cpu / 64] >> (cpu % 64)) & 1;
}

/* One "A" or "A-B" of a list; returns the end of what it read, or NULL. */
static const char *cpu_range_parse(const char *s, struct cpu_list *out)
{
	unsigned long lo, hi;
	char *end;

	if (*s < '0' || *s > '9')
		return NULL;
	lo = hi = strtoul(s, &end, 10);
	if (*end == '-') {
		if (end[1] < '0' || end[1] > '9')
			return NULL;
		hi = strtoul(end + 1, &end, 10);
	}
	if (lo > hi || hi >= CPU_LIST_MAX)
		return NULL;
	for (unsigned long c = lo; c <= hi; c++)
		if (!cpu_list_has(out, c)) {
			out->bits[c / 64] |= 1ULL << (c % 64);
			out->count++;
		}
	return end;
}

int cpu_list_parse(const char *text, struct cpu_list *out)
{
	const char *s = text;

	memset(out, 0, sizeof(*out));
	for (;;) {
		s = cpu_range_parse(s, out);
		if (!s)
			break;
		if (*s == '\0')
			return 0;
		if (*s++ != ',')
			break;
	}
	memset(out, 0, sizeof(*out));
	return -EINVAL;
}

/* Adds one "user nice system idle iowait irq softirq steal" tail to *out. */
static int add_cpu_line(const char *fields, struct core_time *out)
{
	unsigned long long v[8];
	double hz = (double)sysconf(_SC_CLK_TCK);

	if (sscanf(fields, "%llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
		   &v[3], &v[4], &v[5], &v[6], &v[7]) != 8)
		return -EINVAL;
	out->idle_s += (double)(v[3] + v[4]) / hz;
	out->steal_s += (double)v[7] / hz;
	out->ticked_busy_s += (double)(v[0] + v[1] + v[2] + v[5] + v[6]) / hz;
	out->softirq_s += (double)(v[5] + v[6]) / hz;
	out->ncpus++;
	return 0;
}

int proc_cores_time(const struct cpu_list *cpus, struct core_time *out)
{
	unsigned long cpu;
	char line[512];
	int off, err = 0;
	FILE *f = fopen("/proc/stat", "re");

	if (!f)
		return -errno;
	memset(out, 0, sizeof(*out));
	while (!err && fgets(line, sizeof(line), f)) {
		/* "cpuN ...", not the machine's "cpu  ..." (which %lu alone would
		 * take for a CPU number). */
		if (strncmp(line, "cpu", 3) || line[3] < '0' || line[3] > '9' ||
		    sscanf(line + 3, "%lu %n", &cpu, &off) != 1)
			continue;
		if (!cpus || cpu_list_has(cpus, cpu))
			err = add_cpu_line(line + 3 + off, out);
	}
	fclose(f);
	if (err)
		return err;
	if (!out->ncpus || (cpus && out->ncpus != cpus->count))
		return -ENOENT;
	return 0;
}
