/* bench/floor.c - the start-up floor: how long a process linked with
 * libgit2 takes before doing anything, with and without git_libgit2_init.
 * Usage: floor [init] */
#include <git2.h>
#include <string.h>

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "init") == 0) {
		git_libgit2_init();
		git_libgit2_shutdown();
	}
	return 0;
}
