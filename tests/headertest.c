/* headertest.c - each public header compiles on its own.
 *
 * Compiled once for every public header lib/NAME.h, with
 * -DHEADER='"NAME.h"', the project's flags and -Werror (`make units`,
 * which `make check` runs): a header that uses a type, macro or function
 * it does not include or declare itself fails the build.  It is included
 * twice, so a missing include guard fails too.  The model is libgit2's
 * tests/headertest. */
#include HEADER
#include HEADER

/* (something to compile when the header declares nothing) */
int opt_headertest;
