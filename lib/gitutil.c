#include "gitutil.h"
#include "error.h"
#include "sync.h"

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

int opt_git_ref_get(git_repository *repo, const char *name, git_oid *out)
{
	int rc = git_reference_name_to_id(out, repo, name);

	if (rc == GIT_ENOTFOUND) {
		git_error_clear();
		return 0;
	}
	return rc < 0 ? opt_git_fail(OPT_EIO, "cannot read ref") : 1;
}

int opt_sync_emit_rec(const struct opt_sync_opts *o, json_t *rec)
{
	int rc = 0;

	if (!rec)
		return opt_error_set(OPT_EIO, "out of memory");
	if (o && o->emit)
		rc = o->emit(rec, o->arg);
	json_decref(rec);
	return rc;
}

int opt_name_wanted(const char *name, const char *const *names, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (strcmp(names[i], name) == 0)
			return 1;
	return n == 0;
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

int opt_git_repo_reopen_odb(git_repository *repo, const char *qdir)
{
	git_odb *odb = NULL;
	char objdir[PATH_MAX];
	int rc;

	snprintf(objdir, sizeof(objdir), "%sobjects", git_repository_path(repo));
	if (git_odb_open(&odb, objdir) < 0)
		return opt_git_fail(OPT_EIO, "cannot open object database");
	if (qdir && (rc = opt_git_odb_add_quarantine(odb, qdir)) < 0) {
		git_odb_free(odb);
		return rc;
	}
	rc = git_repository_set_odb(repo, odb);
	git_odb_free(odb);
	return rc < 0 ? opt_git_fail(OPT_EIO, "cannot open object database") : 0;
}
