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
VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || cat VERSION 2>/dev/null || echo 0.1)

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

LIB_SRC := $(wildcard lib/*.c)
LIB_OBJ := $(LIB_SRC:lib/%.c=$(B)/lib/%.o)
CMD_SRC := $(wildcard cmd/opt-*.c)
PROGS := $(CMD_SRC:cmd/%.c=$(B)/bin/%)
CMD_COMMON := $(wildcard cmd/common.c)
UNIT_SRC := $(wildcard tests/unit/test-*.c)
UNITS := $(UNIT_SRC:tests/unit/%.c=$(B)/unit/%)
HDRS := $(wildcard lib/*.h cmd/*.h tests/unit/*.h)
MANS := $(wildcard man/*.1 man/*.7)

all: deps-check $(PROGS)

$(B)/lib/%.o: lib/%.c $(HDRS)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(B)/libopt.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $(LIB_OBJ)

$(B)/cmd/common.o: cmd/common.c $(HDRS)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Icmd -c -o $@ $<

$(B)/bin/%: cmd/%.c $(B)/cmd/common.o $(B)/libopt.a $(HDRS)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Icmd -o $@ $< $(B)/cmd/common.o $(B)/libopt.a $(ALL_LDFLAGS) $(LIBS)

$(B)/unit/%: tests/unit/%.c $(B)/libopt.a $(HDRS)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Itests/unit -o $@ $< $(B)/libopt.a $(ALL_LDFLAGS) $(LIBS)

# (and hostile-apply: a modified opt-block for the tests of hostile
# peers, tests/100-opt-sync.bats; not a unit test, not installed)
units: $(UNITS) $(B)/unit/hostile-apply

# Dependencies: installed with apt-get when root, else named.
deps:
	@sh tools/deps.sh install

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
soak: all
	@sh tests/soak.sh

demo: deps
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

clean:
	rm -rf build build-san

.PHONY: all units deps deps-check check check-quick soak demo bench install uninstall clean
-include fuzz/fuzz.mk
