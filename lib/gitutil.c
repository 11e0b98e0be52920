#include "gitutil.h"
#include "error.h"
#include "sync.h"

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
