# fuzz/fuzz.mk - libFuzzer harnesses (see docs/fuzzing.md), included by the
# Makefile.  `make fuzz` builds build-fuzz/fuzz-NAME from fuzz/fuzz-NAME.c
# against the library compiled again with clang, coverage instrumentation,
# ASan and UBSan (never the gcc objects of build/ or build-san/), linked
# with the Makefile's $(LIBS) (pkg-config --libs of its PKGS).

FUZZ_CC ?= clang
FUZZ_B = build-fuzz
FUZZ_SAN = address,undefined
FUZZ_CFLAGS = -std=c11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer \
	-fno-sanitize-recover=undefined -Wall -Wextra -Wno-unused-parameter \
	-Werror=implicit-function-declaration -Werror=int-conversion \
	$(PKG_CFLAGS) -Ilib -DOPT_VERSION='"$(VERSION)"'

FUZZ_SRC := $(wildcard fuzz/fuzz-*.c)
FUZZERS := $(FUZZ_SRC:fuzz/%.c=$(FUZZ_B)/%)
FUZZ_LIB_OBJ := $(LIB_SRC:lib/%.c=$(FUZZ_B)/lib/%.o)

fuzz: $(FUZZERS)

# The library: instrumented for coverage (fuzzer-no-link) and sanitized.
$(FUZZ_B)/lib/%.o: lib/%.c $(HDRS)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link,$(FUZZ_SAN) -c -o $@ $<

$(FUZZ_B)/libopt.a: $(FUZZ_LIB_OBJ)
	@rm -f $@
	ar qcs $@ $(FUZZ_LIB_OBJ)

$(FUZZ_B)/fuzz-%: fuzz/fuzz-%.c $(FUZZ_B)/libopt.a $(HDRS)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer,$(FUZZ_SAN) -o $@ $< $(FUZZ_B)/libopt.a $(LIBS)

fuzz-clean:
	rm -rf $(FUZZ_B)

.PHONY: fuzz fuzz-clean
