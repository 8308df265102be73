# leakshim — `make` builds the shim, the tool and the samples; `make test` runs every test tier;
# `make bench` prints the benchmark ratios. Quiet by default: V=1 shows commands, DEBUG=1 -O0.
CC      ?= cc
PYTHON  ?= /usr/bin/python3
PREFIX  ?= /usr/local
DESTDIR ?=
LIBDIR  ?= $(PREFIX)/lib
BINDIR  ?= $(PREFIX)/bin

ifeq ($(V),1)
Q :=
msg = @true
else
Q := @
msg = @printf '  %-7s %s\n' $(1) $(2);
endif

ifeq ($(DEBUG),1)
OPT := -O0 -g3
else
OPT := -O2 -g
endif

WARN    := -Wall -Wextra -Werror
CSTD    := -std=c11 -D_GNU_SOURCE
CFLAGS  ?=
CFLAGS  += $(CSTD) $(WARN) $(OPT)
SAN     := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

# The core is every shim/*.c that is not a hook or the bootstrap; hooks are shim/hook_*.c (one per
# family). A new core file needs no Makefile edit.
HOOK_SRC := $(sort $(wildcard shim/hook_*.c))
CORE_SRC := $(sort $(filter-out shim/init.c $(HOOK_SRC),$(wildcard shim/*.c)))
SHIM_SRC := $(CORE_SRC) shim/init.c $(HOOK_SRC)
SHIM_HDR := $(wildcard shim/*.h)
SHIM     := shim/libleakshim.so
TOOL     := tools/leakshim
TOOL_SRC := tools/leakshim.c shim/options.c shim/rawio.c

UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))
PROG_SRC := $(sort $(wildcard tests/integration/progs/*.c))
PROG_BIN := $(PROG_SRC:.c=)
UNIT_BIN := $(UNIT_SRC:.c=)

# Samples: the prefix of the file name says which driver it links.
SAMPLE_SRC := $(sort $(wildcard samples/*.c))
SAMPLE_BIN := $(SAMPLE_SRC:.c=)
lib_pq     := $(shell pkg-config --cflags --libs libpq 2>/dev/null || echo -I/usr/include/postgresql -lpq)
lib_redis  := $(shell pkg-config --cflags --libs hiredis 2>/dev/null)
lib_mongoc := $(shell pkg-config --cflags --libs libmongoc-1.0 2>/dev/null)
lib_mysql  := $(shell pkg-config --cflags --libs libmariadb 2>/dev/null)
sample_libs = $(strip $(if $(filter pq_%,$(1)),$(lib_pq)) $(if $(filter redis_%,$(1)),$(lib_redis)) \
	$(if $(filter mongoc_%,$(1)),$(lib_mongoc)) $(if $(filter mysql_%,$(1)),$(lib_mysql)) -lpthread)

.PHONY: all deps demo test unit unit-asan integration bench install uninstall clean format-check options-md
all: $(SHIM) $(TOOL) $(SAMPLE_BIN)

# -z now: no lazy PLT resolver (kilobytes of stack) runs inside a hook on the host's thread.
$(SHIM): $(SHIM_SRC) $(SHIM_HDR) shim/leakshim.map
	$(call msg,CCLD,$@)
	$(Q)$(CC) $(CFLAGS) -fPIC -fvisibility=hidden -shared -o $@ $(SHIM_SRC) \
		-Wl,--version-script=shim/leakshim.map -Wl,-z,defs -Wl,-z,now -ldl -lpthread

$(TOOL): $(TOOL_SRC) $(SHIM_HDR)
	$(call msg,CCLD,$@)
	$(Q)$(CC) $(CFLAGS) -DLEAKSHIM_LIBDIR='"$(LIBDIR)"' -o $@ $(TOOL_SRC)

# Samples are built like a debug build (-O0 -g) so their functions are not inlined away.
samples/%: samples/%.c Makefile
	$(call msg,CCLD,$@)
	$(Q)$(CC) $(CSTD) $(WARN) -O0 -g -o $@ $< $(call sample_libs,$(notdir $@))

# Programs the integration tests run under the shim.
tests/integration/progs/%: tests/integration/progs/%.c
	$(call msg,CCLD,$@)
	$(Q)$(CC) $(CSTD) $(WARN) -O0 -g -o $@ $< -lpthread

BENCH_BIN := tests/bench/connect_ping tests/bench/core_cost
tests/bench/connect_ping: tests/bench/connect_ping.c
	$(call msg,CCLD,$@)
	$(Q)$(CC) $(CFLAGS) -o $@ $<
tests/bench/core_cost: tests/bench/core_cost.c $(CORE_SRC) $(SHIM_HDR)
	$(call msg,CCLD,$@)
	$(Q)$(CC) $(CFLAGS) -Ishim -o $@ $< $(CORE_SRC) -lunwind -ldl -lpthread

# Unit tests link the core directly (no preload).
UNIT_UTIL := tests/unit/unit_util.c
tests/unit/test_%: tests/unit/test_%.c $(UNIT_UTIL) $(CORE_SRC) $(SHIM_HDR) tests/unit/unit.h
	$(call msg,CCLD,$@)
	$(Q)$(CC) $(CFLAGS) -Ishim -o $@ $< $(UNIT_UTIL) $(CORE_SRC) -lcmocka -lunwind -ldl -lpthread

unit: $(UNIT_BIN)
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; ./$$t; done

# The core's unit tests and the tool, built and run with ASan+UBSan.
ASAN_DIR := build/asan
unit-asan:
	@mkdir -p $(ASAN_DIR)
	@set -e; for s in $(UNIT_SRC); do b=$(ASAN_DIR)/$$(basename $$s .c); \
		printf '  %-7s %s\n' ASAN $$b; \
		$(CC) $(CSTD) $(WARN) -O1 -g $(SAN) -Ishim -o $$b $$s $(UNIT_UTIL) $(CORE_SRC) -lcmocka -lunwind -ldl -lpthread; \
		echo "== $$b"; ./$$b; done
	$(Q)$(CC) $(CSTD) $(WARN) -O1 -g $(SAN) -o $(ASAN_DIR)/leakshim $(TOOL_SRC)
	$(Q)LEAKSHIM_TOOL=$(ASAN_DIR)/leakshim $(PYTHON) -m pytest -q tests/integration/test_tool.py

# The shim itself built with ASan+UBSan, and the integration tests run with it preloaded after the
# sanitizer runtimes (tests/integration/helpers.py); tests marked no_asan cannot run under it.
.PHONY: shim-asan integration-asan
ASAN_SHIM := $(ASAN_DIR)/libleakshim.so
ASAN_STUB := $(ASAN_DIR)/libleakshim-asan-stub.so
shim-asan: $(ASAN_SHIM) $(ASAN_STUB)
$(ASAN_SHIM): $(SHIM_SRC) $(SHIM_HDR) shim/leakshim.map
	@mkdir -p $(ASAN_DIR)
	$(call msg,ASAN,$@)
	$(Q)$(CC) $(CSTD) $(WARN) -O1 -g $(SAN) -fPIC -fvisibility=hidden -shared -o $@ $(SHIM_SRC) \
		-Wl,--version-script=shim/leakshim.map -Wl,-z,defs -Wl,-z,now -ldl -lpthread

# Preloaded after libasan by the tests: see the comment in tests/integration/asan_stub.c.
$(ASAN_STUB): tests/integration/asan_stub.c
	@mkdir -p $(ASAN_DIR)
	$(call msg,CCLD,$@)
	$(Q)$(CC) $(CSTD) $(WARN) -O2 -fPIC -shared -o $@ $<

integration-asan: all shim-asan $(PROG_BIN)
	$(Q)LEAKSHIM_TEST_SHIM=$(ASAN_SHIM) $(PYTHON) -m pytest -q -m 'not no_asan' tests/integration

integration: all $(PROG_BIN)
	$(PYTHON) -m pytest -q tests/integration

test: format-check all unit unit-asan integration integration-asan fuzz-smoke

# libFuzzer targets (tests/fuzz/fuzz_*.c, Debian's clang 14), each linking only the core files it
# needs. A run starts from an empty scratch corpus in build/fuzz (new inputs land there, never in
# the repository) plus the checked-in seeds; crash files go to build/fuzz/ too. `make fuzz` runs
# each target FUZZ_SECONDS; `make fuzz-smoke` (part of `make test`) 10 s each.
.PHONY: fuzz fuzz-smoke fuzz-build
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_DIR     := build/fuzz
FUZZ_CFLAGS  := -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all $(CSTD) $(WARN) -Ishim
FUZZ_NAMES   := options suppress
FUZZ_BIN     := $(FUZZ_NAMES:%=$(FUZZ_DIR)/fuzz_%)
fuzz_src_options  := shim/options.c shim/rawio.c
fuzz_src_suppress := shim/suppress.c shim/options.c shim/rawio.c
fuzz_libs_suppress := -lpthread

fuzz-build: $(FUZZ_BIN)
.SECONDEXPANSION:
$(FUZZ_DIR)/fuzz_%: tests/fuzz/fuzz_%.c $$(fuzz_src_$$*) $(SHIM_HDR)
	@mkdir -p $(FUZZ_DIR)
	$(call msg,FUZZCC,$@)
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< $(fuzz_src_$*) $(fuzz_libs_$*)

# -close_fd_mask=2: libFuzzer and the sanitizers keep a private copy of stderr, so a target's own
# warnings stay out of the log. The summary line is the final stats; the full log is kept.
fuzz_run = set -e; for t in $(FUZZ_NAMES); do \
	scratch=$(FUZZ_DIR)/corpus-$$t; log=$(FUZZ_DIR)/fuzz_$$t.log; rm -rf $$scratch; mkdir -p $$scratch; \
	printf '  %-7s %s, %ss\n' FUZZ $$t $(1); \
	if ! $(FUZZ_DIR)/fuzz_$$t -max_total_time=$(1) -timeout=10 -close_fd_mask=2 \
		-print_final_stats=1 -artifact_prefix=$(FUZZ_DIR)/fuzz_$$t- $$scratch tests/fuzz/corpus/$$t >$$log 2>&1; then \
		tail -n 40 $$log; echo "fuzz_$$t FAILED: see $$log and $(FUZZ_DIR)/fuzz_$$t-*"; exit 1; fi; \
	awk '/^stat::number_of_executed_units/ {r=$$2} /^stat::average_exec_per_sec/ {e=$$2} \
		/^Done [0-9]+ runs in/ {s=$$5} END {printf "          %s runs in %s s, %s exec/s, no crash\n", r, s, e}' $$log; \
	done

fuzz: $(FUZZ_BIN)
	@$(call fuzz_run,$(FUZZ_SECONDS))

fuzz-smoke: $(FUZZ_BIN)
	@$(call fuzz_run,10)

# Debian packages (build, servers for the tests, Python drivers) and the MongoDB wire server.
deps:
	bash .ci/deps.sh

# The main job: a leaky libpq service under the shim against a throwaway PostgreSQL.
demo: all
	$(PYTHON) tests/demo.py

bench: all $(BENCH_BIN)
	$(PYTHON) tests/bench/bench.py

options-md: $(TOOL)
	@./$(TOOL) options --markdown

FMT_SRC := $(wildcard shim/*.c shim/*.h tools/*.c tests/unit/*.c tests/unit/*.h tests/integration/progs/*.c \
	tests/bench/*.c samples/*.c)
FMT_SRC += $(wildcard tests/fuzz/*.c)
format-check:
	$(Q)clang-format --dry-run --Werror $(FMT_SRC) && echo "  FORMAT  ok"

install: $(SHIM) $(TOOL)
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(BINDIR)
	install -m 0755 $(SHIM) $(DESTDIR)$(LIBDIR)/libleakshim.so
	install -m 0755 $(TOOL) $(DESTDIR)$(BINDIR)/leakshim

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/libleakshim.so $(DESTDIR)$(BINDIR)/leakshim

clean:
	rm -rf $(SHIM) $(TOOL) $(UNIT_BIN) $(SAMPLE_BIN) $(PROG_BIN) $(BENCH_BIN) build .pytest_cache tests/integration/__pycache__
