/* fixture.h - what the store-level unit tests share: a seeded random
 * generator (re-runnable with OPT_TEST_SEED: main sets seed and rng) and a
 * scratch directory (root) with paths under it. */
#ifndef OPT_FIXTURE_H
#define OPT_FIXTURE_H

#include <ftw.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>

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

#endif
