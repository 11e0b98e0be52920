/* fixture.h - what the store-level unit tests share: a seeded random
 * generator (re-runnable with OPT_TEST_SEED: main sets seed and rng) and a
 * scratch directory (root) with paths under it. */
#ifndef OPT_FIXTURE_H
#define OPT_FIXTURE_H

#include "util.h"

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

__attribute__((unused)) static uint64_t seed, rng;

__attribute__((unused)) static uint64_t rnd(void)
{
	uint64_t z = (rng += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

__attribute__((unused)) static unsigned rn(unsigned n)
{
	return (unsigned)(rnd() % n);
}

static char root[PATH_MAX];

__attribute__((unused)) static const char *at(const char *rel)
{
	static char buf[4][PATH_MAX + 64];
	static int k;
	char *p = buf[k++ % 4];

	snprintf(p, PATH_MAX + 64, "%s/%s", root, rel);
	return p;
}

__attribute__((unused)) static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* The start of a seeded test program: no fsync, the library set up, seed
 * and rng from OPT_TEST_SEED or the clock (printed: a failing seed can be
 * re-run), a scratch directory root (/tmp/opt-test-NAME-XXXXXX made
 * unique by mkdtemp).  0, or -1 after a TAP "Bail out!" line. */
__attribute__((unused)) static int fixture_start(const char *name)
{
	const char *env = getenv("OPT_TEST_SEED");

	setenv("OPT_FSYNC", "0", 1);
	opt_util_init();
	seed = env && *env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL);
	rng = seed;
	printf("# seed %llu\n", (unsigned long long)seed);
	snprintf(root, sizeof(root), "/tmp/opt-test-%s-XXXXXX", name);
	if (!mkdtemp(root)) {
		printf("Bail out! cannot make a temporary directory: %s\n", strerror(errno));
		return -1;
	}
	return 0;
}

#endif
