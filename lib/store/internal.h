/* store/internal.h - (private to the store) what the files of lib/store/
 * share: the store's and the snapshot's structures and the helpers that
 * cross between repo.c, snap.c, commit.c, refs.c, pack.c and packr.c.
 *
 * Included ONLY by the files of lib/store/.  Nothing else may include it,
 * not lib/txn.c, not lib/sync/, not a test: the rest of the library sees
 * the store through store.h, pack.h and store/git.h. */
#ifndef OPT_STORE_INTERNAL_H
#define OPT_STORE_INTERNAL_H

#include <git2.h>

/* ---- refs (refs.c) ---- */

/* 1 when ref name's lock file is there (another writer holds it, or a
 * killed one left it), else 0. */
int opt_ref_locked(git_repository *repo, const char *name);

/* Remove the lock file of ref name when it is older than OPT_STALE_LOCK_MS
 * (default 5000): a writer killed while holding it left it. */
void opt_ref_break_stale_lock(git_repository *repo, const char *name);

#endif
