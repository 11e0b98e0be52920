/* opt.h - the umbrella header of liboptimystic. */
#ifndef OPT_H
#define OPT_H

#include "error.h"
#include "util.h"
#include "json.h"
#include "block.h"
#include "store.h"

#endif
