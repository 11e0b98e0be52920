/* gitutil.h - (library-private) libgit2 helpers the store and the sync
 * family share: an error from libgit2's, the quarantine backend. */
#ifndef OPT_GITUTIL_H
#define OPT_GITUTIL_H

#include <git2.h>

/* Set the last error to "what: <libgit2's last message>" and return code. */
int opt_git_fail(int code, const char *what);

/* Add the quarantine at qdir (an objects directory: qdir/pack holds its
 * packs) to odb, before the store's own backends: packs written through
 * odb (a fetch's) go there, and every read sees them. */
int opt_git_odb_add_quarantine(git_odb *odb, const char *qdir);

#endif
