# leakshim — `make` builds the shim, the tool and the samples; `make test` runs every test tier;
# `make bench` prints the benchmark ratios. Quiet by default: V=1 shows commands, DEBUG=1 -O0.
CC      ?= cc
PYTHON  ?= /usr/bin/python3
PREFIX  ?= /usr/local
DESTDIR ?=
LIBDIR  ?= $(PREFIX)/lib
BINDIR  ?= $(PREFIX)/bin
MANDIR  ?= $(PREFIX)/share/man
INCLUDEDIR ?= $(PREFIX)/include
# The one version string lives in shim/ls_version.h (`make version` prints it).
VERSION := $(shell sed -n 's/^.define LEAKSHIM_VERSION "\(.*\)"$$/\1/p' shim/ls_version.h)

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
SHIM_HDR := $(wildcard shim/*.h) shim/drivers.def shim/include/leakshim.h
SHIM     := shim/libleakshim.so
TOOL     := tools/leakshim
TOOL_SRC := tools/leakshim.c shim/options.c shim/rawio.c shim/outfile.c tools/attach.c
# leakshim report / diff: saved JSON reports read with cJSON (libcjson-dev, .ci/deps.sh).
TOOL_SRC += tools/report_cmd.c tools/report_load.c tools/html.c tools/diff.c
TOOL_LIBS := -lcjson -lm
MAN      := tools/leakshim.1

UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))
PROG_SRC := $(sort $(wildcard tests/integration/progs/*.c))
PROG_BIN := $(PROG_SRC:.c=)
UNIT_BIN := $(UNIT_SRC:.c=)

# Samples: the prefix of the file name says which driver it links. pkg-config runs only when a
# sample is linked (recursive variables), never when make reads this file: `make deps demo` works in
# one invocation on a bare machine, and a sample whose driver is missing says which package.
SAMPLE_SRC := $(sort $(wildcard samples/*.c))
SAMPLE_BIN := $(SAMPLE_SRC:.c=)
sample_pc   = $(if $(filter pq_%,$(1)),libpq) $(if $(filter redis_%,$(1)),hiredis) \
	$(if $(filter mongoc_%,$(1)),libmongoc-1.0) $(if $(filter mysql_%,$(1)),libmariadb)
pc_fallback_libpq = $(if $(wildcard /usr/include/postgresql/libpq-fe.h),-I/usr/include/postgresql -lpq)
pc_libs     = $(or $(shell pkg-config --cflags --libs $(1) 2>/dev/null),$(pc_fallback_$(1)),\
	$(error samples/$(2) needs $(1), which pkg-config does not find: run `make deps`))
sample_libs = $(strip $(foreach p,$(call sample_pc,$(1)),$(call pc_libs,$(p),$(1))) -lpthread)

.PHONY: all deps demo test unit unit-asan integration bench install uninstall clean format-check options-md
all: $(SHIM) $(TOOL) $(MAN) $(SAMPLE_BIN)

# The shim's Python files are embedded (shim/hook_python.c) as source and as build/py/NAME.pyc: the
# build python3's magic number + the marshalled code object, used only by an interpreter with that
# magic number. Without a python3 the .pyc is empty and the shim compiles the source at run time.
PY_SRC := $(wildcard shim/py/*.py)
PY_PYC := $(PY_SRC:shim/py/%.py=build/py/%.pyc)
build/py/%.pyc: shim/py/%.py
	@mkdir -p $(@D)
	$(Q)$(PYTHON) -c 'import sys, marshal, importlib.util as u; f = sys.argv[1]; \
		c = compile(open(f).read(), "<leakshim>/" + f.rsplit("/", 1)[1], "exec"); \
		open(sys.argv[2], "wb").write(u.MAGIC_NUMBER + marshal.dumps(c))' $< $@ 2>/dev/null || : > $@

# Binding: lazy, so a process pays the loader's lookup (700-900 instructions a name) only for the
# libc functions the shim really calls. The exceptions are the functions a hook calls on the host's
# stack (shim/ls_bind.h marks them noplt): bound when the shim loads, so the loader's lazy resolver
# (a few KB of stack) never runs on a host's stack inside a hook (tests/integration/test_binding.py).
# -z pack-relative-relocs: the ~600 relative relocations as a compact RELR table. A compiler
# without GCC's noplt attribute (clang) gets -z now instead: everything bound at load.
BIND_NOW  := -Wl,-z,now
BIND_LAZY := -Wl,-z,lazy
SHIM_BIND := $(if $(shell echo __clang__ | $(CC) -E -P - 2>/dev/null | grep -qx 1 && echo clang),$(BIND_NOW),$(BIND_LAZY))
SHIM_LDFLAGS := -Wl,--version-script=shim/leakshim.map -Wl,-z,defs $(SHIM_BIND) -Wl,-z,pack-relative-relocs \
	-ldl -lpthread
$(SHIM): $(SHIM_SRC) $(SHIM_HDR) shim/leakshim.map $(PY_SRC) $(PY_PYC)
	$(call msg,CCLD,$@)
	$(Q)$(CC) $(CFLAGS) -fPIC -fvisibility=hidden -shared -o $@ $(SHIM_SRC) $(SHIM_LDFLAGS)

# The tool looks for the shim beside itself (LIBDIR relative to BINDIR: a staged DESTDIR tree or a
# moved prefix works), then in LIBDIR. Both are built in; build/tool-dirs changes (and the tool is
# rebuilt) only when they do, e.g. for `make install LIBDIR=... BINDIR=...` after a plain `make`.
LIB_REL   := $(shell realpath -m -s --relative-to='$(BINDIR)' '$(LIBDIR)')
TOOL_DIRS := build/tool-dirs
.PHONY: FORCE version
$(TOOL_DIRS): FORCE
	@mkdir -p $(@D); echo 'LIBDIR=$(LIBDIR) LIB_REL=$(LIB_REL)' | cmp -s - $@ || \
		echo 'LIBDIR=$(LIBDIR) LIB_REL=$(LIB_REL)' > $@
$(TOOL): $(TOOL_SRC) $(SHIM_HDR) $(wildcard tools/*.h) $(TOOL_DIRS)
	$(call msg,CCLD,$@)
	$(Q)$(CC) $(CFLAGS) -DLEAKSHIM_LIBDIR='"$(LIBDIR)"' -DLEAKSHIM_LIB_REL='"$(LIB_REL)"' -o $@ $(TOOL_SRC) $(TOOL_LIBS)

# The man page: tools/leakshim.1.scd, in which the lines @synopsis@, @commands@, @exit-status@ are
# printed by the tool from the table its --help comes from, and @options@ from the table the shim
# parses with (`leakshim help --scdoc SECTION`, `leakshim options --scdoc`); scdoc(1) makes roff.
$(MAN): tools/leakshim.1.scd $(TOOL)
	$(call msg,SCDOC,$@)
	$(Q)command -v scdoc >/dev/null || { echo "scdoc not found: apt-get install scdoc (or make deps)" >&2; exit 1; }
	$(Q)mkdir -p build && awk -v version='$(VERSION)' -v tool='./$(TOOL)' ' \
		{ gsub(/@version@/, version) } \
		/^@(synopsis|commands|exit-status)@$$/ { fflush(); \
			if (system(tool " help --scdoc " substr($$0, 2, length($$0) - 2))) exit 1; next } \
		$$0 == "@options@" { fflush(); if (system(tool " options --scdoc")) exit 1; next } \
		{ print }' $< > build/leakshim.1.scd && scdoc < build/leakshim.1.scd > build/leakshim.1 && mv build/leakshim.1 $@

version:
	@echo $(VERSION)

# Samples are built like a debug build (-O0 -g) so their functions are not inlined away.
samples/%: samples/%.c Makefile
	$(call msg,CCLD,$@)
	$(Q)$(CC) $(CSTD) $(WARN) -O0 -g -o $@ $< $(call sample_libs,$(notdir $@))

# Programs the integration tests run under the shim.
tests/integration/progs/%: tests/integration/progs/%.c $(wildcard tests/integration/progs/*.h)
	$(call msg,CCLD,$@)
	$(Q)$(CC) $(CSTD) $(WARN) -O0 -g -o $@ $< -lpthread

BENCH_BIN := tests/bench/connect_ping tests/bench/core_cost tests/bench/hold_conns
tests/bench/hold_conns: tests/bench/hold_conns.c
	$(call msg,CCLD,$@)
	$(Q)$(CC) $(CFLAGS) -o $@ $<
tests/bench/connect_ping: tests/bench/connect_ping.c
	$(call msg,CCLD,$@)
	$(Q)$(CC) $(CFLAGS) -o $@ $<
BENCH_BIN += tests/bench/timeline_cost
tests/bench/timeline_cost: tests/bench/timeline_cost.c $(CORE_SRC) $(SHIM_HDR)
	$(call msg,CCLD,$@)
	$(Q)$(CC) $(CFLAGS) -Ishim -o $@ $< $(CORE_SRC) -lunwind -ldl -lpthread
tests/bench/core_cost: tests/bench/core_cost.c $(CORE_SRC) $(SHIM_HDR)
	$(call msg,CCLD,$@)
	$(Q)$(CC) $(CFLAGS) -Ishim -o $@ $< $(CORE_SRC) -lunwind -ldl -lpthread

# Unit tests link the core directly (no preload).
UNIT_UTIL := tests/unit/unit_util.c
tests/unit/test_%: tests/unit/test_%.c $(UNIT_UTIL) $(CORE_SRC) $(SHIM_HDR) tests/unit/unit.h
	$(call msg,CCLD,$@)
	$(Q)$(CC) $(CFLAGS) -Ishim -o $@ $< $(UNIT_UTIL) $(CORE_SRC) -lcmocka -lunwind -ldl -lpthread

# The shim's Python side (shim/py/): linted with pyflakes (the names the C bridge injects declared
# as builtins) and unit-tested with pytest against stand-in driver classes, no server, no shim.
PY_DRIVERS  := $(addprefix DRV_,$(shell grep -o '^DRIVER.[A-Z0-9_]*' shim/drivers.def | cut -c8-))
PY_INJECTED := _ls_open,_ls_close,_ls_known,_ls_adopt_fd,_ls_checkout,_ls_checkin,_ls_push,_ls_pop,_ls_capture,\
	_ls_scope,_ls_report_exit,_ls_warn,_ls_verbosity,_ls_source,_ls_code,_ls_set_async_tail,HK_CLIENT,HK_POOL,\
	_LS_INSTALL,_tls,_refs,_msocks,_weakref,_on_death,_wrap,_safe,_pgkey,_pg_member,_ls_attr,_ls_attr_var,\
	_ls_attr_process,_ls_seq,_ls_live,_ls_suppress,_attribution $(PY_DRIVERS)
comma := ,
.PHONY: pyunit
pyunit:
	$(Q)PYFLAKES_BUILTINS="$(subst $(eval) ,$(comma),$(subst $(comma)$(eval) ,$(comma),$(PY_INJECTED)))" $(PYTHON) -m pyflakes shim/py/*.py && echo "  PYFLAKES ok"
	$(Q)cd tests/pyunit && $(PYTHON) -m pytest -q -p no:cacheprovider .

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
	$(Q)$(CC) $(CSTD) $(WARN) -O1 -g $(SAN) -o $(ASAN_DIR)/leakshim $(TOOL_SRC) $(TOOL_LIBS)
	$(Q)LEAKSHIM_TOOL=$(ASAN_DIR)/leakshim $(PYTHON) -m pytest -q tests/integration/test_tool.py

# The shim itself built with ASan+UBSan, and the integration tests run with it preloaded after the
# sanitizer runtimes (tests/integration/helpers.py); tests marked no_asan cannot run under it.
.PHONY: shim-asan integration-asan
ASAN_SHIM := $(ASAN_DIR)/libleakshim.so
ASAN_STUB := $(ASAN_DIR)/libleakshim-asan-stub.so
shim-asan: $(ASAN_SHIM) $(ASAN_STUB)
$(ASAN_SHIM): $(SHIM_SRC) $(SHIM_HDR) shim/leakshim.map $(PY_SRC) $(PY_PYC)
	@mkdir -p $(ASAN_DIR)
	$(call msg,ASAN,$@)
	$(Q)$(CC) $(CSTD) $(WARN) -O1 -g $(SAN) -fPIC -fvisibility=hidden -shared -o $@ $(SHIM_SRC) $(SHIM_LDFLAGS)

# Preloaded after libasan by the tests: see the comment in tests/integration/asan_stub.c.
$(ASAN_STUB): tests/integration/asan_stub.c
	@mkdir -p $(ASAN_DIR)
	$(call msg,CCLD,$@)
	$(Q)$(CC) $(CSTD) $(WARN) -O2 -fPIC -shared -o $@ $<

integration-asan: all shim-asan $(PROG_BIN)
	$(Q)LEAKSHIM_TEST_SHIM=$(ASAN_SHIM) $(PYTHON) -m pytest -q -m 'not no_asan' tests/integration

integration: all $(PROG_BIN)
	$(PYTHON) -m pytest -q tests/integration

test: format-check all unit pyunit unit-asan integration integration-asan fuzz-smoke

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

# Debian packages, as root, nothing started as a service (.ci/deps.sh): `make deps` installs
# everything (build, servers and drivers for every test tier, the MongoDB wire server);
# `make deps-demo` only what `make demo` needs (build tools, libpq, PostgreSQL, python3).
# `sh tools/setup demo|test` runs them on a bare Debian 12, where make itself is missing.
.PHONY: deps-demo
deps:
	bash .ci/deps.sh test
deps-demo:
	bash .ci/deps.sh demo
# `make deps demo`, `make -j2 deps test`: nothing is built before the packages are installed.
ifneq ($(filter deps deps-demo,$(MAKECMDGOALS)),)
.NOTPARALLEL:
endif

# The main job: a leaky libpq service under the shim against a throwaway PostgreSQL (tests/demo.py).
# Builds only what it runs: no other driver's headers are needed.
DEMO_BIN := samples/pq_service samples/pq_service_fixed
demo: $(SHIM) $(TOOL) $(DEMO_BIN)
	$(PYTHON) tests/demo.py

bench: all $(BENCH_BIN)
	$(PYTHON) tests/bench/bench.py

options-md: $(TOOL)
	@./$(TOOL) options --markdown

FMT_SRC := $(wildcard shim/*.c shim/*.h tools/*.c tests/unit/*.c tests/unit/*.h tests/integration/progs/*.c \
	tests/bench/*.c samples/*.c)
FMT_SRC += $(wildcard tests/fuzz/*.c) shim/include/leakshim.h
format-check:
	$(Q)clang-format --dry-run --Werror $(FMT_SRC) && echo "  FORMAT  ok"

# PREFIX, LIBDIR, BINDIR, MANDIR say where the files will live; DESTDIR only prefixes them while
# installing (a staging tree for a package). uninstall removes those three files, no directory.
install: $(SHIM) $(TOOL) $(MAN)
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1
	install -m 0755 $(SHIM) $(DESTDIR)$(LIBDIR)/libleakshim.so
	install -m 0755 $(TOOL) $(DESTDIR)$(BINDIR)/leakshim
	install -m 0644 $(MAN) $(DESTDIR)$(MANDIR)/man1/leakshim.1
	install -d $(DESTDIR)$(INCLUDEDIR)
	install -m 0644 shim/include/leakshim.h $(DESTDIR)$(INCLUDEDIR)/leakshim.h

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/libleakshim.so $(DESTDIR)$(BINDIR)/leakshim $(DESTDIR)$(MANDIR)/man1/leakshim.1 \
		$(DESTDIR)$(INCLUDEDIR)/leakshim.h

clean:
	rm -rf $(SHIM) $(TOOL) $(MAN) $(UNIT_BIN) $(SAMPLE_BIN) $(PROG_BIN) $(BENCH_BIN) build .pytest_cache tests/integration/__pycache__
