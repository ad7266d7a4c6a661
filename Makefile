# ember - build, test, bench.  `make` builds the library and CLI, `make test`
# runs the whole suite (unit tests, reference comparisons, the single-file
# build, and the suite again under ASan+UBSan).  CC, CFLAGS and LDFLAGS may be
# given on the command line; OPENMP=1 builds with OpenMP instead of pthreads.

CC      ?= cc
CFLAGS  ?= -O2 -g
LDFLAGS ?=
PYTHON  ?= /usr/bin/python3
BUILD   ?= build

EMBER_CFLAGS = -std=c11 -Wall -Wextra -Wshadow -Wno-unused-parameter \
               -Iinclude -Isrc -fPIC -D_DEFAULT_SOURCE
ifeq ($(OPENMP),1)
EMBER_CFLAGS += -fopenmp -DEMBER_OPENMP
LDLIBS_OMP = -fopenmp
endif
LDLIBS = -lm -lpthread $(LDLIBS_OMP)

# The version, read from include/ember.h (its only place).
ember_version_part = $(shell sed -n 's/^\#define EMBER_VERSION_$(1) \([0-9][0-9]*\).*/\1/p' include/ember.h)
VERSION_MAJOR := $(call ember_version_part,MAJOR)
VERSION_MINOR := $(call ember_version_part,MINOR)
VERSION_PATCH := $(call ember_version_part,PATCH)
VERSION := $(VERSION_MAJOR).$(VERSION_MINOR).$(VERSION_PATCH)

LIB_SRCS   = $(wildcard src/*.c)
LIB_HDRS   = include/ember.h $(wildcard src/*.h)
LIB_OBJS   = $(patsubst src/%.c,$(BUILD)/obj/%.o,$(LIB_SRCS))
TEST_SRCS  = $(wildcard tests/test_*.c)
TEST_BINS  = $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRCS))
TOOL_SRCS  = $(wildcard tests/tool_*.c)
TOOL_BINS  = $(patsubst tests/%.c,$(BUILD)/tests/%,$(TOOL_SRCS))
EXAMPLE_SRCS = $(filter-out examples/ember.c,$(wildcard examples/*.c))
EXAMPLE_BINS = $(patsubst examples/%.c,$(BUILD)/examples/%,$(EXAMPLE_SRCS))

.PHONY: all lib cli examples tests test check sanitize single run bench fuzz version install uninstall clean win test-win

all: lib cli examples

lib: $(BUILD)/libember.a $(BUILD)/libember.so $(BUILD)/obj/libember-internal.a
cli: $(BUILD)/ember
examples: $(EXAMPLE_BINS)
tests: $(TEST_BINS) $(TOOL_BINS)

# ---- symbols: only the ember_* API is visible -----------------------------
# The library objects are built with hidden visibility, so libember.so
# exports only what ember.h marks EMBER_API.  libember.a is one prelinked
# object whose internal symbols are made local (ld -r, then objcopy
# --localize-hidden), so a program linking it may define gguf_*, ggml_*, ...
# itself; PRELINK=0, or no objcopy, makes a plain archive of the objects.
# The white-box tests link the plain archive obj/libember-internal.a.
OBJCOPY ?= objcopy
PRELINK ?= $(if $(shell command -v $(OBJCOPY) 2>/dev/null),1,0)
LIB_VIS_CFLAGS = -fvisibility=hidden

$(BUILD)/obj/%.o: src/%.c $(LIB_HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(EMBER_CFLAGS) $(LIB_VIS_CFLAGS) $(CFLAGS) $(OBJ_CFLAGS_$*) -c $< -o $@

$(BUILD)/obj/libember-internal.a: $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

ifeq ($(PRELINK),1)
$(BUILD)/libember.a: $(LIB_OBJS)
	@rm -f $@
	$(CC) -r -nostdlib -o $(BUILD)/obj/ember-prelinked.o $^
	$(OBJCOPY) --localize-hidden $(BUILD)/obj/ember-prelinked.o
	ar rcs $@ $(BUILD)/obj/ember-prelinked.o
else
$(BUILD)/libember.a: $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^
endif

# ---- shared library (SONAME), install ------------------------------------
# libember.so.MAJOR.MINOR.PATCH with SONAME libember.so.MAJOR, and the links
# libember.so.MAJOR and libember.so beside it (build/ and the install alike).
SONAME  = libember.so.$(VERSION_MAJOR)
SO_REAL = libember.so.$(VERSION)
$(BUILD)/$(SO_REAL): $(LIB_OBJS)
	$(CC) -shared $(CFLAGS) $(LDFLAGS) -Wl,-soname,$(SONAME) -o $@ $^ $(LDLIBS)
$(BUILD)/libember.so: $(BUILD)/$(SO_REAL)
	ln -sf $(SO_REAL) $(BUILD)/$(SONAME)
	ln -sf $(SONAME) $@

# make install PREFIX=/usr/local DESTDIR= ; make uninstall removes exactly
# what install wrote.  ember.pc is written for PREFIX/LIBDIR/INCLUDEDIR.
PREFIX     ?= /usr/local
DESTDIR    ?=
BINDIR     ?= $(PREFIX)/bin
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
pc_path = $(patsubst $(PREFIX)/%,$${prefix}/%,$(1))
INSTALLED = $(INCLUDEDIR)/ember.h $(LIBDIR)/libember.a $(LIBDIR)/$(SO_REAL) $(LIBDIR)/$(SONAME) \
            $(LIBDIR)/libember.so $(PKGCONFIGDIR)/ember.pc $(BINDIR)/ember

install: lib cli
	install -d $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(BINDIR)
	install -m 644 include/ember.h $(DESTDIR)$(INCLUDEDIR)/ember.h
	install -m 644 $(BUILD)/libember.a $(DESTDIR)$(LIBDIR)/libember.a
	install -m 755 $(BUILD)/$(SO_REAL) $(DESTDIR)$(LIBDIR)/$(SO_REAL)
	ln -sf $(SO_REAL) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libember.so
	install -m 755 $(BUILD)/ember $(DESTDIR)$(BINDIR)/ember
	printf '%s\n' 'prefix=$(PREFIX)' 'libdir=$(call pc_path,$(LIBDIR))' \
		'includedir=$(call pc_path,$(INCLUDEDIR))' '' 'Name: ember' \
		'Description: run GGUF language models on a CPU' 'Version: $(VERSION)' \
		'Libs: -L$${libdir} -lember' 'Libs.private: $(strip $(LDLIBS))' 'Cflags: -I$${includedir}' \
		> $(DESTDIR)$(PKGCONFIGDIR)/ember.pc

uninstall:
	rm -f $(addprefix $(DESTDIR),$(INSTALLED))

# The CLI and the examples see only the public header.
$(BUILD)/ember: examples/ember.c include/ember.h $(BUILD)/libember.a
	$(CC) -std=c11 -Wall -Wextra -Iinclude -D_DEFAULT_SOURCE $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libember.a $(LDLIBS)

$(BUILD)/examples/%: examples/%.c include/ember.h $(BUILD)/libember.a
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -Wall -Wextra -Iinclude -D_DEFAULT_SOURCE $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libember.a $(LDLIBS)

# Tests may include internal headers (white-box).
TEST_DEPS = $(wildcard tests/*.h) tests/test_hostile_model.c
$(BUILD)/tests/%: tests/%.c $(TEST_DEPS) $(LIB_HDRS) $(BUILD)/obj/libember-internal.a
	@mkdir -p $(dir $@)
	$(CC) $(EMBER_CFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/obj/libember-internal.a $(LDLIBS)

# The whole suite.  Prints "N passed, M failed" last.
test: all tests
	PYTHON=$(PYTHON) BUILD=$(BUILD) sh tests/run_all.sh

# The fast subset for the edit-build-test loop: the C unit tests and the
# quick checks tests/run_all.sh lists (about 40 s of CPU time).
check: all tests
	PYTHON=$(PYTHON) BUILD=$(BUILD) sh tests/run_all.sh check

# The C tests again, built with clang (or $(SAN_CC)) under ASan+UBSan.
# kernels_x86.c leaves out UBSan's pointer-overflow check: on its unrolled
# intrinsic code that one check took clang ~110 of ~180 s (the suite's
# longest step), and its addresses come from shapes the model already
# checked; ASan still checks every access there, and every other file (the
# GGUF reader's offsets among them) keeps the check.
SAN_CC ?= $(shell command -v clang >/dev/null 2>&1 && echo clang || echo $(CC))
SAN_FLAGS = -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
SAN_KX_FLAGS = -fno-sanitize=pointer-overflow
sanitize:
	$(MAKE) BUILD=build/asan CC=$(SAN_CC) CFLAGS="$(SAN_FLAGS)" LDFLAGS="$(SAN_FLAGS)" \
		OBJ_CFLAGS_kernels_x86="$(SAN_KX_FLAGS)" all tests
	PYTHON=$(PYTHON) BUILD=build/asan EMBER_SANITIZE=1 sh tests/run_all.sh c

# The drop-in pair: build/single/ember.c + build/single/ember.h.
single: $(BUILD)/single/ember.c
$(BUILD)/single/ember.c: $(LIB_SRCS) $(LIB_HDRS) tools/amalgamate.sh
	sh tools/amalgamate.sh $(BUILD)/single

# Windows x86-64, cross-built with MinGW-w64 into build/win: libember.a,
# ember.dll (exporting the ember_* functions) with its import library
# libember.dll.a, ember.exe, the C tests and the examples (linked statically,
# so they run without MinGW's DLLs).  `make test-win` runs them under wine.
WIN_CC  ?= x86_64-w64-mingw32-gcc
WIN_AR  ?= x86_64-w64-mingw32-ar
WIN_NM  ?= x86_64-w64-mingw32-nm
WIN     = build/win
WIN_CFLAGS = -std=c11 -Wall -Wextra -Iinclude -O2 -D__USE_MINGW_ANSI_STDIO=1
WIN_LIB_CFLAGS = $(WIN_CFLAGS) -Wshadow -Wno-unused-parameter -Isrc
# MinGW's POSIX threads, for the CLI's bench, npc.c's clock and test_threads
# (the library itself uses Win32 threads)
WIN_LDLIBS = -lpthread
WIN_OBJS = $(patsubst src/%.c,$(WIN)/obj/%.o,$(LIB_SRCS))
WIN_TESTS = $(patsubst tests/%.c,$(WIN)/tests/%.exe,$(TEST_SRCS) $(TOOL_SRCS))
WIN_EXAMPLES = $(patsubst examples/%.c,$(WIN)/examples/%.exe,$(EXAMPLE_SRCS))
win: $(WIN)/libember.a $(WIN)/ember.dll $(WIN)/ember.exe $(WIN_TESTS) $(WIN_EXAMPLES) $(WIN)/simple-dll.exe
$(WIN)/obj/%.o: src/%.c $(LIB_HDRS)
	@mkdir -p $(dir $@)
	$(WIN_CC) $(WIN_LIB_CFLAGS) -c $< -o $@
$(WIN)/libember.a: $(WIN_OBJS)
	@rm -f $@
	$(WIN_AR) rcs $@ $^
$(WIN)/ember.def: $(WIN)/libember.a
	{ echo EXPORTS; $(WIN_NM) -g --defined-only $< | awk '$$2 == "T" && $$3 ~ /^ember_/ { print "    " $$3 }' | sort -u; } > $@
$(WIN)/ember.dll: $(WIN)/ember.def $(WIN_OBJS)
	$(WIN_CC) -shared -static-libgcc -o $@ $(WIN_OBJS) $(WIN)/ember.def -Wl,--out-implib,$(WIN)/libember.dll.a
# examples/simple.c against the DLL (beside it, where Windows looks first)
$(WIN)/simple-dll.exe: examples/simple.c include/ember.h $(WIN)/ember.dll
	$(WIN_CC) $(WIN_CFLAGS) -o $@ $< -L$(WIN) -lember.dll
$(WIN)/ember.exe: examples/ember.c include/ember.h $(WIN)/libember.a
	$(WIN_CC) $(WIN_CFLAGS) -static -o $@ $< $(WIN)/libember.a $(WIN_LDLIBS)
$(WIN)/examples/%.exe: examples/%.c include/ember.h $(WIN)/libember.a
	@mkdir -p $(dir $@)
	$(WIN_CC) $(WIN_CFLAGS) -static -o $@ $< $(WIN)/libember.a $(WIN_LDLIBS)
$(WIN)/tests/%.exe: tests/%.c $(TEST_DEPS) $(LIB_HDRS) $(WIN)/libember.a
	@mkdir -p $(dir $@)
	$(WIN_CC) $(WIN_LIB_CFLAGS) -static -o $@ $< $(WIN)/libember.a $(WIN_LDLIBS)
test-win: cli
	BUILD=$(BUILD) sh tests/test_win.sh

run: all
	./$(BUILD)/ember -m models/ember-demo.gguf -p "The meaning of life is" -n 64 --temp 0.8 --seed 42

bench: all
	$(PYTHON) tools/bench.py
	sh tools/bench_tokenizer.sh

FUZZ_SECONDS ?= 60
fuzz:
	sh tests/fuzz/run.sh $(FUZZ_SECONDS)

version:
	@echo $(VERSION)

clean:
	rm -rf build
