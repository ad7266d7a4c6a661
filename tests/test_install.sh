#!/bin/sh
# make install / uninstall: the files land under PREFIX (and DESTDIR+PREFIX),
# the shared library carries SONAME libember.so.MAJOR, a program builds with
# `cc prog.c $(pkg-config --cflags --libs ember)` against the installed files
# (shared, and static with --static) and generates the C CLI's greedy text,
# and uninstall leaves no file behind.
BUILD=${BUILD:-build}
CC=${CC:-cc}
MAKE=${MAKE:-make}
passed=0; failed=0
ok() { passed=$((passed + 1)); echo "ok: $*"; }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }
if ! command -v pkg-config >/dev/null 2>&1; then
    echo "SKIP: test_install needs pkg-config (apt-get install pkg-config)"
    echo "test_install: 0 passed, 0 failed, 1 skipped"
    exit 0
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ember-install.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/usr
version=$($MAKE -s --no-print-directory version)
major=${version%%.*}
mk() { $MAKE -s --no-print-directory BUILD="$BUILD" "$@" > "$tmp/make.log" 2>&1 || { cat "$tmp/make.log"; return 1; }; }

mk install PREFIX="$prefix" && ok "make install PREFIX=$prefix" || bad "make install"
for f in include/ember.h lib/libember.a lib/libember.so.$version lib/pkgconfig/ember.pc bin/ember; do
    [ -f "$prefix/$f" ] && ok "installed $f" || bad "missing $f"
done
[ "$(readlink "$prefix/lib/libember.so.$major")" = "libember.so.$version" ] && ok "libember.so.$major -> libember.so.$version" \
    || bad "libember.so.$major links to '$(readlink "$prefix/lib/libember.so.$major")'"
[ "$(readlink "$prefix/lib/libember.so")" = "libember.so.$major" ] && ok "libember.so -> libember.so.$major" \
    || bad "libember.so links to '$(readlink "$prefix/lib/libember.so")'"
soname=$(readelf -d "$prefix/lib/libember.so.$version" | sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p')
[ "$soname" = "libember.so.$major" ] && ok "SONAME $soname" || bad "SONAME '$soname', want libember.so.$major"
cmp -s include/ember.h "$prefix/include/ember.h" && ok "ember.h installed as is" || bad "installed ember.h differs"

export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
pcv=$(pkg-config --modversion ember)
[ "$pcv" = "$version" ] && ok "pkg-config --modversion ember: $pcv" || bad "pkg-config version '$pcv', want $version"
libs=" $(pkg-config --static --libs ember) "
case "$libs" in *" -lember "*) ;; *) libs="" ;; esac
case "$libs" in *" -lm "*) ;; *) libs="" ;; esac
case "$libs" in *" -lpthread "*) ;; *) libs="" ;; esac
[ -n "$libs" ] && ok "pkg-config --static --libs ember adds -lm -lpthread" \
    || bad "pkg-config --static --libs ember: $(pkg-config --static --libs ember)"

cat > "$tmp/prog.c" <<'PROG'
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ember.h>
static char text[1 << 16];
static int piece(void *ud, ember_token t, const char *s, size_t n) { (void)ud; (void)t; strncat(text, s, n); return 0; }
int main(int argc, char **argv) {
    if (argc != 4) return 2;
    if (strcmp(ember_version(), EMBER_VERSION) != 0) { fprintf(stderr, "version %s, header %s\n", ember_version(), EMBER_VERSION); return 1; }
    ember_model *m; ember_context *c; ember_sampler *s; ember_error e;
    if (ember_model_open_file(argv[1], NULL, &m, &e) != EMBER_OK) { fprintf(stderr, "%s\n", e.message); return 1; }
    if (ember_context_create(m, NULL, &c, &e) != EMBER_OK) { fprintf(stderr, "%s\n", e.message); return 1; }
    ember_sampler_params sp = ember_sampler_default_params();
    sp.temperature = 0.0f;
    if (ember_sampler_create(m, &sp, &s) != EMBER_OK) return 1;
    if (ember_generate_text(c, s, argv[2], atoi(argv[3]), piece, NULL, NULL) != EMBER_OK) return 1;
    printf("%s %s\n", ember_version(), text);
    ember_sampler_free(s); ember_context_free(c); ember_model_free(m);
    return 0;
}
PROG
model=$PWD/models/ember-demo.gguf
prompt="Once upon a time"
cli=$("./$BUILD/ember" -m "$model" -p "$prompt" -n 16 --temp 0 2>/dev/null)
want="$version $cli"
[ -n "$cli" ] || bad "the C CLI generated nothing"

# shellcheck disable=SC2046
if $CC -std=c11 -Wall -Wextra -o "$tmp/prog" "$tmp/prog.c" $(pkg-config --cflags --libs ember) 2> "$tmp/cc.log"; then
    needed=$(readelf -d "$tmp/prog" | sed -n 's/.*Shared library: \[\(libember[^]]*\)\].*/\1/p')
    [ "$needed" = "libember.so.$major" ] && ok "the program needs $needed" || bad "the program needs '$needed'"
    got=$(LD_LIBRARY_PATH="$prefix/lib" "$tmp/prog" "$model" "$prompt" 16)
    [ -n "$cli" ] && [ "$got" = "$want" ] && ok "built with pkg-config, runs on the installed libember.so: '$got'" \
        || bad "shared: got '$got', want '$want'"
else
    bad "cc prog.c \$(pkg-config --cflags --libs ember):"; head -10 "$tmp/cc.log"
fi
# shellcheck disable=SC2046
if $CC -std=c11 -Wall -Wextra -static -o "$tmp/prog-static" "$tmp/prog.c" $(pkg-config --static --cflags --libs ember) 2> "$tmp/cc.log"; then
    if readelf -d "$tmp/prog-static" 2>/dev/null | grep -q 'libember'; then bad "the static program still needs libember.so"
    else ok "the static program (pkg-config --static, cc -static) needs no libember.so"; fi
    got=$(LD_LIBRARY_PATH=/nonexistent "$tmp/prog-static" "$model" "$prompt" 16)
    [ -n "$cli" ] && [ "$got" = "$want" ] && ok "the static program generates the CLI's text" || bad "static: got '$got', want '$want'"
else
    bad "cc -static prog.c \$(pkg-config --static --cflags --libs ember):"; head -10 "$tmp/cc.log"
fi
got=$("$prefix/bin/ember" -m "$model" -p "$prompt" -n 16 --temp 0 2>/dev/null)
[ -n "$cli" ] && [ "$got" = "$cli" ] && ok "the installed CLI generates as the built one" || bad "installed CLI: '$got'"

mk uninstall PREFIX="$prefix" && ok "make uninstall" || bad "make uninstall"
left=$(find "$prefix" ! -type d)
[ -z "$left" ] && ok "uninstall left no file" || bad "left after uninstall: $left"

dest=$tmp/dest
mk install PREFIX=/usr/local DESTDIR="$dest" && ok "make install PREFIX=/usr/local DESTDIR=$dest" || bad "DESTDIR install"
n=$(find "$dest" ! -type d | wc -l)
outside=$(find "$dest" ! -type d | grep -v "^$dest/usr/local/")
[ "$n" -eq 7 ] && [ -z "$outside" ] && ok "DESTDIR install: 7 files and links, all under DESTDIR/usr/local" \
    || bad "DESTDIR install: $n files, outside /usr/local: $outside"
grep -qx 'prefix=/usr/local' "$dest/usr/local/lib/pkgconfig/ember.pc" && ok "ember.pc says prefix=/usr/local (not DESTDIR)" \
    || bad "ember.pc: $(head -3 "$dest/usr/local/lib/pkgconfig/ember.pc")"
mk uninstall PREFIX=/usr/local DESTDIR="$dest" && [ -z "$(find "$dest" ! -type d)" ] && ok "DESTDIR uninstall left no file" \
    || bad "DESTDIR uninstall left: $(find "$dest" ! -type d)"

echo "test_install: $passed passed, $failed failed, 0 skipped"
[ $failed -eq 0 ]
