/* gitutil.h - (library-private) small helpers shared by the modules that
 * talk to libgit2 and report sync records: one place for each. */
#ifndef OPT_GITUTIL_H
#define OPT_GITUTIL_H

#include <git2.h>
#include <jansson.h>
#include <stddef.h>

struct opt_sync_opts;  /* sync.h */

/* Set the last error to "what: <libgit2's last message>" and return code. */
int opt_git_fail(int code, const char *what);

/* The value of ref name in repo: 1 and *out, 0 when absent, <0 (OPT_EIO)
 * on failure. */
int opt_git_ref_get(git_repository *repo, const char *name, git_oid *out);

/* Add the quarantine at qdir (an objects directory: qdir/pack holds its
 * packs) to odb, before the store's own backends: packs written through
 * odb (a fetch's) go there, and every read sees them. */
int opt_git_odb_add_quarantine(git_odb *odb, const char *qdir);

/* Give repo a fresh object database of its own objects directory, with
 * the quarantine qdir added (NULL: none). */
int opt_git_repo_reopen_odb(git_repository *repo, const char *qdir);

/* Hand record rec (stolen; NULL: out of memory) to o's emit callback:
 * its return value, 0 without one. */
int opt_sync_emit_rec(const struct opt_sync_opts *o, json_t *rec);

/* Is name among the n names (n == 0: every name is)? */
int opt_name_wanted(const char *name, const char *const *names, size_t n);

#endif
