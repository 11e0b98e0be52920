#include "gitutil.h"
#include "error.h"

#include <git2/sys/odb_backend.h>
#include <git2/sys/repository.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

int opt_git_fail(int code, const char *what)
{
	const git_error *e = git_error_last();

	return opt_error_set(code, "%s: %s", what, e && e->message ? e->message : "unknown libgit2 error");
}

int opt_git_odb_add_quarantine(git_odb *odb, const char *qdir)
{
	git_odb_backend *pk = NULL;

	/* (the store's packs have priority 2, its loose objects 1; writes
	 * of loose objects still go to the store: a fetch writes a pack) */
	if (git_odb_backend_pack(&pk, qdir) < 0)
		return opt_git_fail(OPT_EIO, "cannot open the quarantine of incoming objects");
	if (git_odb_add_backend(odb, pk, 4) < 0) {
		pk->free(pk);
		return opt_git_fail(OPT_EIO, "cannot open the quarantine of incoming objects");
	}
	return 0;
}
