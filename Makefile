# calsync -- bi-directional calendar sync engine.
#
#   make            build build/calsync
#   make run        deps + build + serve on the embedded defaults
#   make test       deps + every test suite (unit, sanitizers, specs, e2e), in parallel
#   make deps       install the missing Debian packages (idempotent)
#   make asan       ASan+UBSan build in build/asan/calsync
#   make spec       busted specs of the shipped policies
#   make install    PREFIX=/usr/local DESTDIR= (binary, policies, man pages, systemd unit, sample config)
#   make demo       a one-minute tour against the fake Google; leaves nothing running
#   make clean

PREFIX  ?= /usr/local
DESTDIR ?=
CC      ?= cc
PKG_CONFIG ?= pkg-config

PKGS    := lua5.4 lua5.4-cjson libcurl libmicrohttpd sqlite3 libcrypto libpq
# pkg-config is only asked when a target needs it, so `make deps` runs on a
# machine that has none of the libraries yet.
PKG_CFLAGS = $(shell $(PKG_CONFIG) --cflags $(PKGS))
PKG_LIBS   = $(shell $(PKG_CONFIG) --libs $(PKGS))

WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wformat=2 -Wno-format-nonliteral
CFLAGS  ?= -O2 -g
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE $(WARN) $(CFLAGS) -Isrc -Ibuild/gen $(PKG_CFLAGS)
LDLIBS_ALL = $(PKG_LIBS) -lpthread -lm

# src/ and one or two levels of seams (src/store/, src/provider/google/, ...):
# the pattern rules below mirror the folders under build/.
SRC     := $(wildcard src/*.c src/*/*.c src/*/*/*.c)
LUA_SRC := $(sort $(wildcard lua/calsync/*.lua))
HDR     := $(wildcard src/*.h src/*/*.h src/*/*/*.h)

OBJ       := $(SRC:src/%.c=build/obj/%.o) build/obj/lua_bundle.o build/obj/version.o
ASAN_OBJ  := $(SRC:src/%.c=build/asan/obj/%.o) build/asan/obj/lua_bundle.o build/asan/obj/version.o
LIB_OBJ   := $(filter-out build/obj/main.o,$(OBJ))
ASAN_LIB_OBJ := $(filter-out build/asan/obj/main.o,$(ASAN_OBJ))
SAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer

UNIT_SRC  := $(wildcard tests/unit/test_*.c)
# test-only helpers (the in-memory provider), linked into every unit test
UNIT_HELP := $(filter-out $(UNIT_SRC),$(wildcard tests/unit/*.c))
UNIT_BIN  := $(UNIT_SRC:tests/unit/%.c=build/tests/%)
ASAN_UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=build/asan/tests/%)

VERSION := $(shell git describe --always --dirty 2>/dev/null || echo 0.1.0)

.PHONY: all run test deps asan spec unit e2e install clean bench soak fuzz check-deps demo

all: build/calsync

build/tools/bundle: tools/bundle.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -O1 -Wall -Wextra -Werror -o $@ $<

build/gen/lua_bundle.c: build/tools/bundle $(LUA_SRC)
	@mkdir -p $(dir $@)
	build/tools/bundle $@ $(LUA_SRC)

# Only version.c changes with the commit, so a new commit relinks but
# recompiles nothing else.
build/gen/version.c: FORCE
	@mkdir -p $(dir $@)
	@echo '#include "version.h"' > $@.tmp
	@echo 'const char calsync_version[] = "$(VERSION)";' >> $@.tmp
	@cmp -s $@.tmp $@ || mv $@.tmp $@; rm -f $@.tmp
FORCE:

build/obj/%.o: src/%.c $(HDR)
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	@$(CC) $(ALL_CFLAGS) -c -o $@ $<

build/obj/lua_bundle.o: build/gen/lua_bundle.c src/bundle.h
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

build/obj/version.o: build/gen/version.c src/version.h
	@$(CC) $(ALL_CFLAGS) -c -o $@ $<

build/calsync: $(OBJ)
	$(CC) $(CFLAGS) -o $@ $(OBJ) $(LDLIBS_ALL)

# ---- sanitizer build -------------------------------------------------------
asan: build/asan/calsync

build/asan/obj/%.o: src/%.c $(HDR)
	@mkdir -p $(dir $@)
	@echo "  CC/SAN  $<"
	@$(CC) $(ALL_CFLAGS) -O1 $(SAN_FLAGS) -c -o $@ $<

build/asan/obj/version.o: build/gen/version.c src/version.h
	@mkdir -p $(dir $@)
	@$(CC) $(ALL_CFLAGS) -O1 $(SAN_FLAGS) -c -o $@ $<

build/asan/obj/lua_bundle.o: build/gen/lua_bundle.c src/bundle.h
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -O1 $(SAN_FLAGS) -c -o $@ $<

build/asan/calsync: $(ASAN_OBJ)
	$(CC) $(SAN_FLAGS) -o $@ $(ASAN_OBJ) $(LDLIBS_ALL)

# ---- tests -----------------------------------------------------------------
build/tests/%: tests/unit/%.c $(LIB_OBJ) tests/unit/unit.h $(UNIT_HELP) $(wildcard tests/unit/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(shell $(PKG_CONFIG) --cflags cmocka) -o $@ $< $(UNIT_HELP) $(LIB_OBJ) $(LDLIBS_ALL) $(shell $(PKG_CONFIG) --libs cmocka)

build/asan/tests/%: tests/unit/%.c $(ASAN_LIB_OBJ) tests/unit/unit.h $(UNIT_HELP) $(wildcard tests/unit/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -O1 $(SAN_FLAGS) $(shell $(PKG_CONFIG) --cflags cmocka) -o $@ $< $(UNIT_HELP) $(ASAN_LIB_OBJ) $(LDLIBS_ALL) $(shell $(PKG_CONFIG) --libs cmocka)

# ---- benchmarks --------------------------------------------------------------
# `make bench`: every benchmark of docs/performance.md in one run (~4 min on
# 2 cores), one table on stdout, the scaling plot in docs/. BENCH_ARGS is
# passed to bench/run.py (e.g. BENCH_ARGS="--only intake,policy --reps 5").
BENCH_BIN := $(patsubst bench/%.c,build/bench/%,$(wildcard bench/*.c))
BENCH_ARGS ?=

build/bench/%: bench/%.c $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(LIB_OBJ) $(LDLIBS_ALL)

bench:
	@sh tools/deps.sh --bench
	$(MAKE) all $(BENCH_BIN)
	python3 bench/run.py $(BENCH_ARGS)

deps:
	@sh tools/deps.sh

unit: build/calsync $(UNIT_BIN) $(ASAN_UNIT_BIN)

spec: build/calsync
	@sh tools/deps.sh --quiet
	lua5.4 /usr/bin/busted

# Builds in parallel, then runs every suite as parallel jobs
# (tests/run_all.py: one job per unit binary and per e2e module and build).
NPROC := $(shell nproc 2>/dev/null || echo 2)
test: deps
	$(MAKE) -j$(NPROC) all asan unit
	sh tests/run_all.sh

e2e: all asan
	sh tests/run_all.sh e2e

# A long soak: make soak DURATION=600 SEED=7 (prints what it covered).
DURATION ?= 600
SEED ?= 1
soak: all
	CALSYNC_SOAK_SECONDS=$(DURATION) CALSYNC_SOAK_SEED=$(SEED) CALSYNC_BIN=build/calsync \
	    python3 -m unittest discover -s tests/e2e -p test_soak.py

run: deps
	$(MAKE) all
	./build/calsync serve $(if $(CONFIG),-c $(CONFIG))

# A one-minute tour against the fake Google (tools/demo.py): bookings, host
# edits in Google, the decisions and the signed webhooks; stops everything.
demo: deps
	$(MAKE) all
	python3 tools/demo.py

# The binary finds the policies in <bin>/../share/calsync/policies and
# resolves the configuration's relative paths against the file's directory,
# so an installed calsync runs from any working directory (and from a
# DESTDIR staging tree). The sample configuration is installed as
# calsync.conf.lua only when there is none: an operator's file is never
# overwritten (the sample is always in share/calsync/ too).
SYSCONFDIR ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
MANDIR     ?= $(PREFIX)/share/man
UNITDIR    ?= $(PREFIX)/lib/systemd/system
install: build/calsync
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/calsync/policies \
	    $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(UNITDIR) \
	    $(DESTDIR)$(SYSCONFDIR)/calsync $(DESTDIR)$(PREFIX)/share/doc/calsync
	install -m 0755 build/calsync $(DESTDIR)$(PREFIX)/bin/calsync
	install -m 0644 policies/*.lua $(DESTDIR)$(PREFIX)/share/calsync/policies/
	install -m 0644 packaging/calsync.conf.lua $(DESTDIR)$(PREFIX)/share/calsync/calsync.conf.lua.sample
	[ -e $(DESTDIR)$(SYSCONFDIR)/calsync/calsync.conf.lua ] || \
	    install -m 0640 packaging/calsync.conf.lua $(DESTDIR)$(SYSCONFDIR)/calsync/calsync.conf.lua
	install -m 0644 man/calsync.1 $(DESTDIR)$(MANDIR)/man1/calsync.1
	install -m 0644 man/calsync.conf.5 $(DESTDIR)$(MANDIR)/man5/calsync.conf.5
	sed -e 's|@BINDIR@|$(PREFIX)/bin|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' \
	    packaging/calsync.service > $(DESTDIR)$(UNITDIR)/calsync.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/calsync.service
	install -m 0644 LICENSE CHANGELOG.md README.md $(DESTDIR)$(PREFIX)/share/doc/calsync/
	install -d $(DESTDIR)$(PREFIX)/share/calsync/lua/calsync
	install -m 0644 lua/calsync/*.lua $(DESTDIR)$(PREFIX)/share/calsync/lua/calsync/
	install -m 0644 spec/helpers.lua $(DESTDIR)$(PREFIX)/share/calsync/lua/

clean:
	rm -rf build

# ---- fuzzing ---------------------------------------------------------------
# make fuzz [FUZZ_SECONDS=30] [FUZZ_TARGETS="fuzz_rfc3339 ..."]
# libFuzzer targets fuzz/fuzz_*.c over the product objects, all built with
# clang -fsanitize=fuzzer,address,undefined into build/fuzz/. fuzz/run.sh
# seeds each target (fuzz/seeds/ plus seeds generated from the tests and
# fixtures), runs it FUZZ_SECONDS, prints executions, exec/s and crashes,
# and exits non-zero on any crash. Only this target needs clang and the
# libFuzzer runtime (tools/deps.sh --fuzz); `make test` never pulls them in.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 30
FUZZ_TARGETS ?=
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_CFLAGS   = -std=c11 -D_GNU_SOURCE $(WARN) -O1 -g $(FUZZ_SAN) -Isrc -Ibuild/gen $(PKG_CFLAGS)
FUZZ_SRC     := $(wildcard fuzz/fuzz_*.c)
FUZZ_BIN     := $(FUZZ_SRC:fuzz/%.c=build/fuzz/%)
FUZZ_OBJ     := $(filter-out build/fuzz/obj/main.o,$(SRC:src/%.c=build/fuzz/obj/%.o)) \
                build/fuzz/obj/lua_bundle.o build/fuzz/obj/version.o

.PHONY: fuzz-build
.SECONDARY: $(FUZZ_OBJ)

build/fuzz/obj/%.o: src/%.c $(HDR)
	@mkdir -p $(dir $@)
	@echo "  CC/FUZZ $<"
	@$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

build/fuzz/obj/lua_bundle.o: build/gen/lua_bundle.c src/bundle.h
	@mkdir -p $(dir $@)
	@$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

build/fuzz/obj/version.o: build/gen/version.c src/version.h
	@mkdir -p $(dir $@)
	@$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

build/fuzz/fuzz_%: fuzz/fuzz_%.c fuzz/fuzz.h $(FUZZ_OBJ)
	@mkdir -p $(dir $@)
	@echo "  LD/FUZZ $@"
	@$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_OBJ) $(LDLIBS_ALL)

fuzz-build: $(FUZZ_BIN)

fuzz:
	@sh tools/deps.sh --fuzz
	@$(MAKE) --no-print-directory fuzz-build
	@FUZZ_SECONDS=$(FUZZ_SECONDS) sh fuzz/run.sh $(FUZZ_TARGETS)
