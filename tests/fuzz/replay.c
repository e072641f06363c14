/* SPDX-License-Identifier: MIT */
/* Run the fuzz harness once on each file named, or on each file in each
 * directory named, without libFuzzer: the corpus and the inputs that once
 * failed become a fast regression test that any compiler can build (under
 * the sanitizers in the ASan build). */
#include "fuzz.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int replay_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *data = NULL;
	long size;

	if (!f || fseek(f, 0, SEEK_END) < 0 || (size = ftell(f)) < 0 ||
	    fseek(f, 0, SEEK_SET) < 0 || !(data = malloc((size_t)size + 1)) ||
	    fread(data, 1, (size_t)size, f) != (size_t)size) {
		fprintf(stderr, "replay: cannot read %s: %s\n", path, strerror(errno));
		if (f)
			fclose(f);
		free(data);
		return -1;
	}
	fclose(f);
	/* Named first: a failure aborts, and the last name shown is the culprit. */
	fprintf(stderr, "replay: %s\n", path);
	LLVMFuzzerTestOneInput(data, (size_t)size);
	free(data);
	return 0;
}

/* A README.md beside the inputs says what they are; it is not one. */
static bool is_input(const char *name)
{
	size_t n = strlen(name);

	return name[0] != '.' && !(n > 3 && strcmp(name + n - 3, ".md") == 0);
}

/* Every input in dir, in name order (so a run is repeatable). */
static int replay_dir(const char *dir, unsigned *count)
{
	struct dirent **ents;
	int n = scandir(dir, &ents, NULL, alphasort), bad = 0;
	char path[PATH_MAX];
	struct stat st;

	if (n < 0) {
		fprintf(stderr, "replay: cannot list %s: %s\n", dir, strerror(errno));
		return -1;
	}
	for (int i = 0; i < n; i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, ents[i]->d_name);
		if (is_input(ents[i]->d_name) && stat(path, &st) == 0 &&
		    S_ISREG(st.st_mode)) {
			bad |= replay_file(path);
			(*count)++;
		}
		free(ents[i]);
	}
	free(ents);
	return bad;
}

int main(int argc, char **argv)
{
	unsigned count = 0;
	struct stat st;
	int bad = 0;

	for (int i = 1; i < argc; i++) {
		if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode)) {
			bad |= replay_dir(argv[i], &count);
		} else {
			bad |= replay_file(argv[i]);
			count++;
		}
	}
	printf("replay: %u inputs%s\n", count,
	       bad ? ", some unreadable" : ", all passed");
	return bad ? 1 : 0;
}
