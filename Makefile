# optimystic - a transactional, versioned block database for the command line
.SUFFIXES:

PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR ?= $(PREFIX)/share/zsh/site-functions
FISHCOMPDIR ?= $(PREFIX)/share/fish/vendor_completions.d
DESTDIR ?=

CFLAGS ?= -O2 -g
PKGS = libgit2 jansson libsodium zlib libcrypto libdeflate
# The release number is the file VERSION; built from a git checkout,
# --version also names the commit: "opt-block 0.1.0 (1a2b3c4d5e6f)", with
# "-dirty" after it when the work tree differs; from a tarball (make dist)
# the release alone.
RELEASE := $(shell cat VERSION 2>/dev/null || echo 0.0.0)
COMMIT := $(shell [ "$$(git rev-parse --show-toplevel 2>/dev/null)" = "$$(pwd -P)" ] && \
	git rev-parse --short=12 HEAD 2>/dev/null)
DIRTY := $(if $(COMMIT),$(shell git diff --quiet HEAD 2>/dev/null || echo -dirty))
VERSION := $(RELEASE)$(if $(COMMIT), ($(COMMIT)$(DIRTY)))

# SAN=1 builds into build-san/ with AddressSanitizer and UBSan.
ifeq ($(SAN),1)
B = build-san
SANFLAGS = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
else
B = build
SANFLAGS =
endif

PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter -Werror=implicit-function-declaration -Werror=int-conversion $(CFLAGS) $(SANFLAGS) \
	$(PKG_CFLAGS) -Ilib -DOPT_VERSION='"$(VERSION)"'
ALL_LDFLAGS = $(LDFLAGS) $(SANFLAGS)
LIBS = $(PKG_LIBS) -lpthread

# lib/ and its families (lib/store/, lib/sync/): one object each
LIB_SRC := $(wildcard lib/*.c lib/*/*.c)
LIB_OBJ := $(LIB_SRC:lib/%.c=$(B)/lib/%.o)
CMD_SRC := $(wildcard cmd/opt-*.c)
PROGS := $(CMD_SRC:cmd/%.c=$(B)/bin/%)
CMD_COMMON := $(wildcard cmd/common.c)
UNIT_SRC := $(wildcard tests/unit/test-*.c)
UNITS := $(UNIT_SRC:tests/unit/%.c=$(B)/unit/%)
HDRS := $(wildcard lib/*.h lib/*/*.h cmd/*.h tests/unit/*.h)
MANS := $(wildcard man/*.1 man/*.7)

all: deps-check $(PROGS)

$(B)/lib/%.o: lib/%.c $(HDRS)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(B)/libopt.a: $(LIB_OBJ)
	@rm -f $@
	ar qcs $@ $(LIB_OBJ)

# the version is compiled into common.o: rebuilt when it changes
$(B)/version.stamp: FORCE
	@mkdir -p $(@D)
	@echo '$(VERSION)' | cmp -s - $@ || echo '$(VERSION)' > $@

$(B)/cmd/common.o: cmd/common.c $(HDRS) $(B)/version.stamp
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Icmd -c -o $@ $<

$(B)/bin/%: cmd/%.c $(B)/cmd/common.o $(B)/libopt.a $(HDRS)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Icmd -o $@ $< $(B)/cmd/common.o $(B)/libopt.a $(ALL_LDFLAGS) $(LIBS)

$(B)/unit/%: tests/unit/%.c $(B)/libopt.a $(HDRS)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Itests/unit -o $@ $< $(B)/libopt.a $(ALL_LDFLAGS) $(LIBS)

# Each public header lib/NAME.h compiles on its own: tests/headertest.c,
# which includes only it, built with the project's flags and -Werror.
PUB_HDRS := $(wildcard lib/*.h)
HDR_TESTS := $(PUB_HDRS:lib/%.h=$(B)/headertest/%.o)

$(B)/headertest/%.o: lib/%.h tests/headertest.c $(HDRS)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Werror -DHEADER='"$*.h"' -c -o $@ tests/headertest.c

headertest: $(HDR_TESTS)

# (and hostile-apply: a modified opt-block for the tests of hostile
# peers, tests/100-opt-sync.bats; not a unit test, not installed)
units: $(UNITS) $(B)/unit/hostile-apply $(HDR_TESTS)

# Dependencies: installed with apt-get when root, else named.  deps-build
# is what the build needs, and no test tool (for the demo).
deps:
	@sh tools/deps.sh install

deps-build:
	@sh tools/deps.sh install-build

deps-check:
	@sh tools/deps.sh check

# The README's test command: unit tests and bats suites, once plainly and
# once under ASan+UBSan, ending with one line "N passed, N failed".
check: deps
	@$(MAKE) --no-print-directory all units
	@$(MAKE) --no-print-directory SAN=1 all units
	@sh tests/run.sh build build-san

# One pass only (quicker while developing).
check-quick: deps
	@$(MAKE) --no-print-directory all units
	@sh tests/run.sh build

# Long fuzz and soak runs (not part of check).
soak: deps
	@$(MAKE) --no-print-directory all units
	@$(MAKE) --no-print-directory SAN=1 all units
	@sh tests/soak.sh

demo: deps-build
	@$(MAKE) --no-print-directory all
	@sh tools/demo.sh build/bin

bench: all
	@sh bench/run.sh

install: all
	mkdir -p $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man7
	mkdir -p $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(FISHCOMPDIR)
	for p in $(PROGS); do cp $$p $(DESTDIR)$(BINDIR)/; done
	for m in man/*.1; do cp $$m $(DESTDIR)$(MANDIR)/man1/; done
	for m in man/*.7; do cp $$m $(DESTDIR)$(MANDIR)/man7/; done
	for p in $(PROGS); do n=$$(basename $$p); \
		cp completions/opt.bash $(DESTDIR)$(BASHCOMPDIR)/$$n; done
	for p in $(PROGS); do n=$$(basename $$p); \
		cp completions/opt.zsh $(DESTDIR)$(ZSHCOMPDIR)/_$$n; \
		sed "s/@PROG@/$$n/g" completions/opt.fish > $(DESTDIR)$(FISHCOMPDIR)/$$n.fish; done

uninstall:
	for p in $(PROGS); do n=$$(basename $$p); \
		rm -f $(DESTDIR)$(BINDIR)/$$n $(DESTDIR)$(MANDIR)/man1/$$n.1 \
		$(DESTDIR)$(BASHCOMPDIR)/$$n $(DESTDIR)$(ZSHCOMPDIR)/_$$n \
		$(DESTDIR)$(FISHCOMPDIR)/$$n.fish; done
	for m in man/*.7; do rm -f $(DESTDIR)$(MANDIR)/man7/$$(basename $$m); done

# A source tarball of the committed tree: optimystic-RELEASE.tar.gz.
dist:
	git archive --prefix=optimystic-$(RELEASE)/ -o optimystic-$(RELEASE).tar.gz HEAD

version:
	@echo '$(VERSION)'

clean:
	rm -rf build build-san

FORCE:

.PHONY: all units headertest deps deps-build deps-check check check-quick soak demo bench install uninstall dist version clean FORCE
-include fuzz/fuzz.mk
