# imm - build, test and demo. `make help` lists the targets.
#
# Takes the variables LuaRocks passes (LUA_INCDIR, LIBFLAG, CFLAGS,
# INST_LIBDIR, INST_LUADIR), finds OpenSSL and libcurl with pkg-config, and
# never links liblua: the interpreter that loads the module provides it.

LUA        ?= lua5.4
# the runtime's name: LuaRocks passes LUA as the interpreter's full path
LUA_NAME    = $(notdir $(LUA))
# where the runtime's headers live, per runtime
LUA_PC      = $(if $(filter luajit,$(LUA_NAME)),luajit,$(LUA_NAME))
LUA_INCDIR ?= $(or $(patsubst -I%,%,$(firstword $(shell pkg-config --cflags-only-I $(LUA_PC) 2>/dev/null))),/usr/include/$(LUA_NAME))
LUA_ABI     = $(if $(filter luajit lua5.1,$(LUA_NAME)),5.1,$(patsubst lua%,%,$(LUA_NAME)))

CC         ?= cc
CFLAGS     ?= -O2 -g
WARN        = -Wall -Wextra -Wstrict-prototypes -Wmissing-prototypes -Wshadow -Wformat=2
MYCFLAGS    = -std=c99 -D_POSIX_C_SOURCE=200809L -fPIC -fvisibility=hidden $(WARN) -Iinclude
LIBFLAG    ?= -shared
# LuaRocks passes the directories of its external_dependencies here
DEP_INCDIRS ?=
DEP_LIBDIRS ?=
DEP_CFLAGS  = $(addprefix -I,$(DEP_INCDIRS)) $(shell pkg-config --cflags libcurl openssl zlib 2>/dev/null)
DEP_LIBS    = $(addprefix -L,$(DEP_LIBDIRS)) \
              $(shell pkg-config --libs libcurl openssl zlib 2>/dev/null || echo -lcurl -lssl -lcrypto -lz) -lpthread

# Every product stays under build/, one directory per runtime: nothing lands
# in ./imm/, where `lua` started at the checkout root would load it
BUILD      ?= build/$(LUA_NAME)
# the one version string: lua/imm/client.lua holds it, the C module is built
# with it, and spec/02 checks the rockspec against both
VERSION    := $(shell sed -n 's/^local VERSION = "\(.*\)"$$/\1/p' lua/imm/client.lua)
RUNTIMES   ?= lua5.1 lua5.2 lua5.3 lua5.4 luajit
SRCS        = src/imm_buf.c src/imm_sign.c src/imm_castore.c src/imm_http.c src/imm_json.c src/imm_jsonenc.c src/imm_luaenc.c src/imm_core.c
HDRS        = src/imm_buf.h src/imm_sign.h src/imm_castore.h src/imm_http.h src/imm_json.h src/imm_jsonenc.h src/imm_luaenc.h src/imm_preload.h include/imm.h
OBJS        = $(patsubst src/%.c,$(BUILD)/obj/%.o,$(SRCS))
MODULE      = $(BUILD)/imm/core.so
# libimm.a, for C hosts (include/imm.h): the module's objects, plus the Lua
# modules embedded at build time and imm_preload() to register them
LIB         = $(BUILD)/libimm.a
LIB_SRCS    = src/imm_preload.c
LIB_OBJS    = $(OBJS) $(patsubst src/%.c,$(BUILD)/obj/%.o,$(LIB_SRCS)) $(BUILD)/obj/imm_lua.o

PREFIX     ?= /usr/local
INST_LIBDIR ?= $(PREFIX)/lib/lua/$(LUA_ABI)
INST_LUADIR ?= $(PREFIX)/share/lua/$(LUA_ABI)
LUA_FILES   = $(shell find lua -name '*.lua')

# the specs and demo find the working tree's modules first
# ...and never ask the ECS metadata service (100.100.100.200) for credentials
TEST_ENV    = LUA_PATH="lua/?.lua;lua/?/init.lua;spec/?.lua;;" LUA_CPATH="$(BUILD)/?.so;;" \
              no_proxy=127.0.0.1,localhost NO_PROXY=127.0.0.1,localhost \
              ALIBABA_CLOUD_ECS_METADATA_DISABLED=true
BUSTED      = /usr/bin/busted
VECTORS    ?= spec/fixtures/signing.json
BODY_VECTORS ?= spec/fixtures/signing_body.json
SPECS      ?= spec
RUN_PREFIX ?=

.PHONY: all gen build lib host-check core-check async-specs deps deps-demo demo test server-check fuzz soak bench bench-instr matrix unit docs lint test-lua5.4 test-luajit lint asan valgrind \
        check specs spec-prep rockspec-check dist release install uninstall install-rock install-lua rock env love-check clean help

all: build

build: $(MODULE) $(LIB)

## lib: only libimm.a (LUA=lua5.4 by default), for embedding in a C host
lib: $(LIB)

# rock: what `luarocks make` builds (the C module only; see the rockspec)
rock: $(MODULE)

## env: `eval "$$(make env LUA=lua5.4)"` uses this checkout's build without installing it
# The build's own output goes to stderr, so that only the exports reach eval.
# Lua 5.2+ read LUA_PATH_5_x and LUA_CPATH_5_x before the plain names: only
# those are set for them, so another runtime in the same shell is never sent
# to this runtime's core.so. Lua 5.1 and LuaJIT read only the plain names.
ENV_PATH    = $(CURDIR)/lua/?.lua;$(CURDIR)/lua/?/init.lua;;
ENV_CPATH   = $(CURDIR)/$(BUILD)/?.so;;
ENV_SUFFIX  = $(if $(filter 5.1,$(LUA_ABI)),,_$(subst .,_,$(LUA_ABI)))
# bin/ with the runtime in the first line, so `imm` runs on this build's Lua
ENV_BINS    = $(BUILD)/bin/imm $(BUILD)/bin/imm-server
$(BUILD)/bin/%: bin/%
	@mkdir -p $(dir $@)
	@sed '1s|^#!/usr/bin/env lua$$|#!/usr/bin/env $(LUA_NAME)|' $< >$@ && chmod 755 $@
env:
	@$(MAKE) --no-print-directory build $(ENV_BINS) >&2
	@echo "export LUA_PATH$(ENV_SUFFIX)='$(ENV_PATH)'"
	@echo "export LUA_CPATH$(ENV_SUFFIX)='$(ENV_CPATH)'"
	@echo "export PATH='$(CURDIR)/$(BUILD)/bin':\"\$$PATH\""

$(BUILD)/obj/%.o: src/%.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(MYCFLAGS) $(EXTRA_CFLAGS) -DIMM_VERSION='"$(VERSION)"' -I$(LUA_INCDIR) $(DEP_CFLAGS) -c $< -o $@

# generated from lua/ on every change, never copied by hand
$(BUILD)/gen/imm_lua.c: tools/embed_lua.py $(LUA_FILES)
	@mkdir -p $(dir $@)
	@echo "python3 tools/embed_lua.py lua $@ (lua/**/*.lua)"
	@python3 tools/embed_lua.py lua $@ $(LUA_FILES)

$(BUILD)/obj/imm_lua.o: $(BUILD)/gen/imm_lua.c src/imm_preload.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(MYCFLAGS) $(EXTRA_CFLAGS) -Isrc -c $< -o $@

$(LIB): $(LIB_OBJS)
	@rm -f $@
	$(AR) rcs $@ $(LIB_OBJS)

$(MODULE): $(OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(LIBFLAG) $(CFLAGS) $(EXTRA_CFLAGS) -o $@ $(OBJS) $(DEP_LIBS)

deps:
	@sh tools/install-deps.sh test

deps-demo:
	@sh tools/install-deps.sh demo

## demo: list bindings from the bundled local IMM server with the pager
demo: deps-demo
	@$(MAKE) --no-print-directory build LUA=lua5.4
	@$(TEST_ENV) sh tools/with-server.sh lua5.4 examples/list_bindings.lua immtest

## test: every check (specs on Lua 5.1-5.4 and LuaJIT, nginx, lint, ASan+UBSan, valgrind, the C host with TSan, LÖVE, LuaRocks, a short fuzz pass)
test: deps
	@$(MAKE) --no-print-directory lint
	@$(MAKE) --no-print-directory server-check
	@$(MAKE) --no-print-directory specs
	@$(MAKE) --no-print-directory host-check
	@$(MAKE) --no-print-directory love-check
	@$(MAKE) --no-print-directory rockspec-check
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=10
	@echo "imm: all checks passed"

## server-check: the local IMM server agrees with the official SDK's vectors, and
## imm sends every action as the official SDK does (tools/sdk-check/sdkdiff.js)
server-check: build
	@echo "imm: local IMM server against the signing vectors"
	@python3 server/imm_server --check-vectors $(VECTORS)
	@python3 server/imm_server --check-vectors $(BODY_VECTORS)
	@python3 -m unittest discover -s server/tests -p 'test_*.py'
	@python3 server/tests/selftest.py
	@python3 server/tests/fuzz.py --seed 1 --requests 1500 --seconds 30
	@echo "imm: the official Node SDK against the local IMM server, and against imm ($(LUA))"
	@IMM_LUA=$(LUA) IMM_CPATH='$(BUILD)/?.so' sh tools/sdk-check/run.sh

## check: the specs on one runtime (LUA, default lua5.4) and lint, side by side: the quick check before a commit (make test runs every check)
# The spec files in CHECK_SHARDS busted runs (every CHECK_SHARDS-th file in
# each): most of a run's time is spent waiting on loopback servers and timeouts.
CHECK_SHARDS ?= 3
check_shard   = $(shell ls spec/*_spec.lua | awk 'NR % $(CHECK_SHARDS) == $(1) % $(CHECK_SHARDS)')
check: PREP_RUNTIMES = $(LUA_NAME)
check: spec-prep
	@bash tools/parallel.sh $(SPEC_LOGS) $$(($(CHECK_SHARDS) + 1)) lint '$(MAKE) --no-print-directory lint' \
	  $(foreach i,$(shell seq 1 $(CHECK_SHARDS)),specs-$(LUA_NAME)-$(i) '$(MAKE) --no-print-directory unit LUA=$(LUA) \
	  EXTRA_CFLAGS=-Werror SPEC_NOTE="part $(i)/$(CHECK_SHARDS)" SPECS="$(call check_shard,$(i))"')

## matrix: the specs on every runtime, each in its own build directory, side by side (PARALLEL_JOBS at once; logs in build/logs/)
# The runs share no port (each server asks the kernel for one) and no temporary
# file (mktemp); spec-prep builds first what they would all build into one place.
PARALLEL_JOBS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ $$n -gt 2 ] && echo $$n || echo 2)
SPEC_LOGS   ?= build/logs
SPEC_UNIT    = $(foreach l,$(RUNTIMES),specs-$(l) '$(MAKE) --no-print-directory unit LUA=$(l) EXTRA_CFLAGS=-Werror')
matrix: spec-prep
	@bash tools/parallel.sh $(SPEC_LOGS) $(PARALLEL_JOBS) $(SPEC_UNIT)

## specs: matrix, async-specs, asan and valgrind side by side (PARALLEL_JOBS at once), as make test runs them
specs: spec-prep
	@bash tools/parallel.sh $(SPEC_LOGS) $(PARALLEL_JOBS) valgrind '$(MAKE) --no-print-directory valgrind' \
	  asan '$(MAKE) --no-print-directory asan' $(SPEC_UNIT) \
	  $(foreach l,lua5.4 luajit,async-$(l) '$(MAKE) --no-print-directory async-specs ASYNC_RUNTIMES=$(l)')

# spec-prep: every runtime's build (and the LuaJIT one the nginx specs load),
# spec 16's C checks and the test certificates, made once before parallel runs
PREP_RUNTIMES ?= $(RUNTIMES)
spec-prep:
	@for l in $(sort $(PREP_RUNTIMES) luajit); do $(MAKE) --no-print-directory build LUA=$$l EXTRA_CFLAGS=-Werror || exit 1; done
	@$(MAKE) --no-print-directory core-check >/dev/null
	@mkdir -p build/test-certs && sh tools/gen_certs.sh build/test-certs >/dev/null

## unit: the busted specs on one runtime (LUA=lua5.1 ... lua5.4, luajit)
unit: build
	@$(MAKE) --no-print-directory build LUA=luajit BUILD=build/luajit EXTRA_CFLAGS= CFLAGS="-O2 -g"  # the nginx specs load it
	@echo "imm: specs on $(LUA) $(SPEC_NOTE)"
	@$(TEST_ENV) sh tools/run-specs.sh "$(LUA)$(if $(SPEC_NOTE),-$(word 2,$(SPEC_NOTE)))" \
	  $(RUN_PREFIX) $(LUA) $(BUSTED) -o utfTerminal $(BUSTED_ARGS) $(SPECS)

## async-specs: the client, pager, reliability and lifecycle specs again, every call inside an async task (Lua 5.4, LuaJIT)
ASYNC_SPECS = spec/04_client_spec.lua spec/05_pager_spec.lua spec/08_reliability_spec.lua spec/12_lifecycle_spec.lua
ASYNC_RUNTIMES ?= lua5.4 luajit
async-specs:
	@for l in $(ASYNC_RUNTIMES); do $(MAKE) --no-print-directory unit LUA=$$l SPEC_NOTE="in async mode" \
	  BUSTED_ARGS=--helper=spec/helpers/async_mode.lua SPECS="$(ASYNC_SPECS)" || exit 1; done

## docs: LDoc HTML in build/docs (LuaLS ---@ annotations are stripped for LDoc)
docs:
	@rm -rf build/docs-src build/docs && mkdir -p build/docs-src && cp -r lua README.md config.ld build/docs-src/
	@mv build/docs-src/lua/imm/actions_meta.lua build/docs-src/lua/imm/actions.lua  # imm.actions with its comments
	@find build/docs-src/lua -name '*.lua' -exec sed -i '/^---@/d' {} +
	@cd build/docs-src && ldoc -d ../docs . | grep -v "^reading\|^format\|^output" ; \
	  echo "imm: documentation in build/docs/index.html"

## gen: regenerate lua/imm/schema.lua, api.lua and actions.lua from api/ (tools/gen_api.py)
gen:
	@python3 tools/gen_api.py

lint:
	@echo "imm: generated code is up to date (tools/gen_api.py)"
	@tmp=$$(mktemp -d) && python3 tools/gen_api.py --out $$tmp && \
	  for f in schema.lua api.lua actions.lua actions_meta.lua; do \
	    diff -u lua/imm/$$f $$tmp/$$f >/dev/null || { echo "lua/imm/$$f is stale or edited by hand: run make gen" >&2; \
	      diff -u lua/imm/$$f $$tmp/$$f | head -20 >&2; rm -rf $$tmp; exit 1; }; \
	  done; rm -rf $$tmp
	@echo "imm: docs check"
	@lua5.4 tools/check-docs.lua lua/imm.lua lua/imm/*.lua lua/imm/*/*.lua
	@$(MAKE) --no-print-directory docs
	@lua5.4 tools/check-ldoc.lua build/docs lua/imm/actions_meta.lua
	@echo "imm: luacheck"
	@luacheck -q lua spec examples bin/imm tools/sdk-check/imm_send.lua
	@echo "imm: cppcheck"
	@cppcheck -q --error-exitcode=1 --enable=warning,portability,performance \
	  --inline-suppr --std=c99 -I src -I include $(SRCS) $(LIB_SRCS) examples/host/host.c

## asan: the specs against a module built with AddressSanitizer + UBSan
ASAN_CFLAGS = -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
asan:
	@$(MAKE) --no-print-directory unit LUA=lua5.4 BUILD=build/asan SPEC_NOTE="under ASan+UBSan" \
	  CFLAGS="$(ASAN_CFLAGS)" EXTRA_CFLAGS=-Werror \
	  RUN_PREFIX='env LD_PRELOAD="$(shell $(CC) -print-file-name=libasan.so) $(shell $(CC) -print-file-name=libubsan.so)" \
	  ASAN_OPTIONS=detect_leaks=1:exitcode=23 IMM_PYTHON=$(CURDIR)/spec/helpers/python_unpreloaded.sh \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1'

## valgrind: one pass of every spec under memcheck; a leak or error fails it
valgrind:
	@$(MAKE) --no-print-directory unit LUA=lua5.4 SPEC_NOTE="under valgrind" \
	  RUN_PREFIX="valgrind -q --error-exitcode=42 --leak-check=full --errors-for-leak-kinds=definite,indirect \
	  --show-leak-kinds=definite,indirect"

## fuzz: each libFuzzer target for FUZZ_SECONDS (default 60) from the seed corpus
FUZZ_SECONDS ?= 60
FUZZ_TARGETS = fuzz_sign fuzz_headers fuzz_response fuzz_json fuzz_json_encode fuzz_core fuzz_castore
FUZZ_FLAGS   = -g -O1 -std=c99 -D_POSIX_C_SOURCE=200809L -fsanitize=fuzzer,address,undefined \
               -fno-sanitize-recover=all -Isrc
build/fuzz/fuzz_sign: fuzz/fuzz_sign.c src/imm_sign.c src/imm_buf.c $(HDRS)
	@mkdir -p $(dir $@)
	clang $(FUZZ_FLAGS) -o $@ $(filter %.c,$^) -lcrypto -lpthread
build/fuzz/fuzz_headers: fuzz/fuzz_headers.c src/imm_http.c src/imm_castore.c src/imm_buf.c $(HDRS)
	@mkdir -p $(dir $@)
	clang $(FUZZ_FLAGS) -o $@ $(filter %.c,$^) $(DEP_LIBS)
build/fuzz/fuzz_castore: fuzz/fuzz_castore.c src/imm_castore.c src/imm_castore.h
	@mkdir -p $(dir $@)
	clang $(FUZZ_FLAGS) -o $@ $(filter %.c,$^) -lssl -lcrypto -lpthread
build/fuzz/fuzz_response: fuzz/fuzz_response.c src/imm_json.c src/imm_json.h
	@mkdir -p $(dir $@)
	clang $(FUZZ_FLAGS) -I/usr/include/lua5.4 -o $@ $(filter %.c,$^) -llua5.4
build/fuzz/fuzz_json: fuzz/fuzz_json.c fuzz/fuzz_alloc.h src/imm_json.c src/imm_json.h
	@mkdir -p $(dir $@)
	clang $(FUZZ_FLAGS) -I/usr/include/lua5.4 -o $@ $(filter %.c,$^) -llua5.4
# the whole module, opened with luaopen_imm_core
build/fuzz/fuzz_json_encode: fuzz/fuzz_json_encode.c fuzz/fuzz_alloc.h $(SRCS) $(HDRS)
	@mkdir -p $(dir $@)
	clang $(FUZZ_FLAGS) -Iinclude -I/usr/include/lua5.4 -DIMM_VERSION='"$(VERSION)"' $(DEP_CFLAGS) \
	  -o $@ $(filter %.c,$^) -llua5.4 $(DEP_LIBS) -ldl
build/fuzz/fuzz_core: fuzz/fuzz_core.c $(SRCS) $(HDRS)
	@mkdir -p $(dir $@)
	clang $(FUZZ_FLAGS) -Iinclude -I/usr/include/lua5.4 $(DEP_CFLAGS) -DIMM_VERSION='"$(VERSION)"' -o $@ \
	  $(filter %.c,$^) -llua5.4 $(DEP_LIBS) -lm -ldl
fuzz: $(addprefix build/fuzz/,$(FUZZ_TARGETS))
	@for t in $(FUZZ_TARGETS); do \
	  echo "imm: fuzzing $$t for $(FUZZ_SECONDS)s"; \
	  mkdir -p build/fuzz/corpus-$$t build/fuzz/crashes; \
	  seeds=fuzz/corpus/$${t#fuzz_}; dict=; case $$t in fuzz_response|fuzz_json|fuzz_json_encode) dict=-dict=fuzz/json.dict;; esac; \
	  ./build/fuzz/$$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 $$dict \
	    -artifact_prefix=build/fuzz/crashes/ -print_final_stats=1 \
	    build/fuzz/corpus-$$t $$seeds 2>build/fuzz/$$t.log || { tail -40 build/fuzz/$$t.log; exit 1; }; \
	  grep -E "stat::number_of_executed_units|cov:" build/fuzz/$$t.log | tail -2; \
	done

## bench: imm against the official Node SDK and the libcurl limits, on a loopback nginx, then at 20/50 ms RTT (BENCH_ARGS=--latency-only: only that; bench/README.md)
bench:
	@sh bench/bench.sh $(BENCH_ARGS)

## bench-instr: instructions per call (callgrind), per stage and for start-up, Lua 5.4 and LuaJIT, next to the libcurl limits (bench/README.md)
bench-instr:
	@$(MAKE) --no-print-directory -s build LUA=lua5.4 BUILD=build/lua5.4
	@$(MAKE) --no-print-directory -s build LUA=luajit BUILD=build/luajit
	@mkdir -p build/bench
	@$(CC) -O2 -g -std=c99 $(WARN) $$(pkg-config --cflags libcurl) bench/curl_loop.c \
	  -o build/bench/curl_loop $$(pkg-config --libs libcurl)
	@$(CC) -O2 -g -std=c99 $(WARN) -DBENCH_CJSON $$(pkg-config --cflags libcurl lua5.4) bench/curl_loop.c \
	  -o build/bench/curl_cjson_loop $$(pkg-config --libs libcurl lua5.4)
	@$(CC) -O2 -g -std=c99 $(WARN) -DBENCH_CJSON -DBENCH_LUAJIT $$(pkg-config --cflags libcurl luajit) bench/curl_loop.c \
	  -o build/bench/curl_cjson_jit_loop $$(pkg-config --libs libcurl luajit)
	@python3 bench/instr.py $(INSTR_ARGS)

## soak: 100k list calls against the local IMM server; prints RSS growth (SOAK_CALLS=N)
SOAK_CALLS ?= 100000
soak: deps-demo
	@$(MAKE) --no-print-directory build LUA=$(LUA)
	@$(TEST_ENV) sh tools/with-server.sh $(LUA) bench/soak.lua $(SOAK_CALLS)

## core-check: build the C checks spec/16 runs (spec/c/core_check.c): JSON on a 64 KB thread stack (plain build) and a failing-allocator sweep (ASan+UBSan build)
CHECK_CFLAGS = -std=c99 -D_POSIX_C_SOURCE=200809L $(WARN) -Isrc -Iinclude -I/usr/include/lua5.4 $(DEP_CFLAGS) \
               -DIMM_VERSION='"$(VERSION)"'
CHECK_SAN    = -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
CHECK_LIBS   = -llua5.4 $(DEP_LIBS) -lm -ldl
# every malloc, calloc and realloc of src/ goes through the sweep's switch
CHECK_ALLOC  = -Dmalloc=check_malloc -Dcalloc=check_calloc -Drealloc=check_realloc
core-check: build/check/core_check build/check/core_check_plain
build/check/core_check: spec/c/core_check.c $(SRCS) $(HDRS)
	@mkdir -p build/check/obj
	@for f in $(SRCS); do o=build/check/obj/$$(basename $$f .c).o; \
	  $(CC) -g -O1 $(CHECK_SAN) $(CHECK_CFLAGS) $(CHECK_ALLOC) -c $$f -o $$o || exit 1; done
	$(CC) -g -O1 $(CHECK_SAN) $(CHECK_CFLAGS) -o $@ spec/c/core_check.c \
	  $(patsubst src/%.c,build/check/obj/%.o,$(SRCS)) $(CHECK_LIBS) -lpthread
build/check/core_check_plain: spec/c/core_check.c $(SRCS) $(HDRS)
	@mkdir -p build/check
	$(CC) -O2 -g $(CHECK_CFLAGS) -o $@ spec/c/core_check.c $(SRCS) $(CHECK_LIBS) -lpthread

## host-check: the example C host (examples/host) on the local server: list, 4 threads, 4 threads under TSan and under valgrind
host-check:
	@sh tools/host-check.sh

## love-check: the LÖVE example (examples/love) headless under Xvfb, on LuaJIT, against the local server
love-check:
	@$(MAKE) --no-print-directory build LUA=luajit
	@sh tools/love-check.sh

## rockspec-check: `luarocks make --deps-mode=none` into a scratch tree, 5.4 and 5.1; README's install lines, make dist offline, make uninstall
rockspec-check:
	@sh tools/rockspec-check.sh
	@sh tools/dist-check.sh

## dist: build/dist/imm-$(VERSION)-1.src.rock from the working tree; `luarocks install` of it needs no network
DIST_DIR ?= build/dist
dist:
	@sh tools/dist.sh $(VERSION) $(DIST_DIR)

## release: `make release VERSION=x.y.z`: clean tree, version written everywhere, spec 02 and `make check` (RELEASE_CHECK=...), a commit, the tag vx.y.z, make dist
RELEASE_CHECK ?= check
release:
	@sh tools/release.sh $(VERSION) "$(RELEASE_CHECK)"

INST_BINDIR ?= $(PREFIX)/bin
# The C module, the Lua modules (precompiled where the runtime's compiler is
# found, Lua 5.2-5.4 by default: tools/install-lua.sh, IMM_BYTECODE=0|1; the
# sources always go to imm/lua-src/ beside them), and the local IMM server (imm/server/imm_server/)
# with its sample data and the API description it reads (imm/server/api/)
# beside them, where bin/imm-server looks on package.path.
SERVER_FILES = $(wildcard server/imm_server/*.py)
install-lua: $(MODULE)
	install -d $(DESTDIR)$(INST_LIBDIR)/imm $(DESTDIR)$(INST_LUADIR)/imm/server/imm_server \
	  $(DESTDIR)$(INST_LUADIR)/imm/server/api
	install -m 755 $(MODULE) $(DESTDIR)$(INST_LIBDIR)/imm/core.so
	for f in $(LUA_FILES); do d=$(DESTDIR)$(INST_LUADIR)/$${f#lua/}; mkdir -p $${d%/*} && \
	  sh tools/install-lua.sh "$(LUA)" $${f#lua/} $$d || exit 1; done
	for f in $(LUA_FILES); do d=$(DESTDIR)$(INST_LUADIR)/imm/lua-src/$${f#lua/}; mkdir -p $${d%/*} && install -m 644 $$f $$d || exit 1; done
	install -m 644 $(SERVER_FILES) $(DESTDIR)$(INST_LUADIR)/imm/server/imm_server/
	install -m 644 tools/sample_bindings.json $(DESTDIR)$(INST_LUADIR)/imm/server/
	install -m 644 api/imm-2020-09-30.json api/task-types.json $(DESTDIR)$(INST_LUADIR)/imm/server/api/

# install-rock: what `luarocks make` installs; LuaRocks itself installs bin/
install-rock: install-lua

install: build install-lua
	install -d $(DESTDIR)$(INST_BINDIR)
	for b in imm imm-server; do \
	  sed '1s|^#!/usr/bin/env lua$$|#!/usr/bin/env $(LUA_NAME)|' bin/$$b >$(DESTDIR)$(INST_BINDIR)/$$b && \
	    chmod 755 $(DESTDIR)$(INST_BINDIR)/$$b || exit 1; \
	done
	install -d $(DESTDIR)$(PREFIX)/lib/imm/$(LUA_NAME) $(DESTDIR)$(PREFIX)/include
	install -m 644 $(LIB) $(DESTDIR)$(PREFIX)/lib/imm/$(LUA_NAME)/libimm.a
	install -m 644 include/imm.h $(DESTDIR)$(PREFIX)/include/imm.h

## uninstall: remove what `make install` put there (the same LUA, PREFIX, DESTDIR)
# imm/server/ and imm/lua-src/ (the sources beside the bytecode) are imm's
# own directories (the server writes __pycache__ there);
# elsewhere only imm's files, then its directories once they are empty
uninstall:
	rm -f $(DESTDIR)$(INST_BINDIR)/imm $(DESTDIR)$(INST_BINDIR)/imm-server $(DESTDIR)$(PREFIX)/include/imm.h \
	  $(DESTDIR)$(PREFIX)/lib/imm/$(LUA_NAME)/libimm.a $(DESTDIR)$(INST_LIBDIR)/imm/core.so \
	  $(addprefix $(DESTDIR)$(INST_LUADIR)/,$(patsubst lua/%,%,$(LUA_FILES)))
	rm -rf $(DESTDIR)$(INST_LUADIR)/imm/server $(DESTDIR)$(INST_LUADIR)/imm/lua-src
	for d in $$(cd lua && find imm -depth -type d) $(DESTDIR)$(INST_LIBDIR)/imm $(DESTDIR)$(PREFIX)/lib/imm/$(LUA_NAME) \
	  $(DESTDIR)$(PREFIX)/lib/imm; do \
	  case $$d in /*) ;; *) d=$(DESTDIR)$(INST_LUADIR)/$$d;; esac; \
	  if [ -d "$$d" ]; then rmdir "$$d" 2>/dev/null || true; fi; \
	done

clean:
	rm -rf build

help:
	@# a "## " line that names no target continues the one above it
	@grep -E '^## ' Makefile | sed -E 's/^## ([A-Za-z0-9_-]+:)/  make \1/; s/^## /      /'
