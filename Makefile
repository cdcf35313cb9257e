# Build, install and check composefs-storage (the Rust library, its C ABI, and the CLI).
#
#   make                      release build (library .so/.a and the composefs-storage CLI)
#   make install              install, stripped; honours PREFIX, LIBDIR, INCLUDEDIR, BINDIR, PKGCONFIGDIR,
#                             MANDIR, DESTDIR (STRIP=true installs unstripped, as debian/rules does)
#   make install-debug        the .so's and the CLI's debug info, split into DEBUGDIR/.build-id/xx/rest.debug
#   make check                every test (scripts/test-all.sh)
#   make header               regenerate include/composefs-storage.h (cbindgen's library, pinned in Cargo.toml)
#   make symbols              regenerate src/ffi/exported-symbols.txt and debian/libcomposefs-storage0.symbols
#   make man                  regenerate man/composefs-storage.1 from the CLI's definitions

PREFIX ?= /usr/local
EXEC_PREFIX ?= $(PREFIX)
BINDIR ?= $(EXEC_PREFIX)/bin
LIBDIR ?= $(EXEC_PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
MANDIR ?= $(PREFIX)/share/man
DEBUGDIR ?= /usr/lib/debug
DESTDIR ?=

CARGO ?= cargo
INSTALL ?= install
STRIP ?= strip
OBJCOPY ?= objcopy
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
RELEASE := $(TARGET_DIR)/release
BUILD := build

# The crate version names the installed file; the ABI version (src/ffi/version.rs) names the SONAME.
VERSION := $(shell awk '/^\[/{p = ($$0 == "[package]")} p && /^version *=/{gsub(/.*= *"|".*/, ""); print; exit}' Cargo.toml)
ABI := $(shell sed -n 's/^pub const CFS_ABI_VERSION: u32 = \([0-9]*\);/\1/p' src/ffi/version.rs)
LIB := libcomposefs_storage
SONAME := $(LIB).so.$(ABI)
REALNAME := $(LIB).so.$(VERSION)

# Paths under PREFIX are written as ${prefix}/... in the .pc file.
pc_rel = $(patsubst $(PREFIX)/%,$${prefix}/%,$(1))

.PHONY: all build header check-header symbols check-symbols man install install-debug uninstall check clean

all: build

build: $(BUILD)/native-static-libs.txt
	$(CARGO) build --release --lib --bins

# The system libraries a static link needs, as rustc reports them for this crate's staticlib.
# (Asking cargo again only when the dependencies change: the extra rustc flag rebuilds the crate.)
$(BUILD)/native-static-libs.txt: Cargo.toml Cargo.lock
	@mkdir -p $(BUILD)
	$(CARGO) rustc --release --lib --crate-type staticlib -- --print native-static-libs 2>$(BUILD)/native-static-libs.log \
		|| { cat $(BUILD)/native-static-libs.log >&2; exit 1; }
	sed -n 's/^note: native-static-libs: //p' $(BUILD)/native-static-libs.log | tail -n 1 >$@.tmp
	@test -s $@.tmp || { echo "error: rustc printed no native-static-libs (see $(BUILD)/native-static-libs.log)" >&2; exit 1; }
	mv $@.tmp $@

$(BUILD)/composefs-storage.pc: pkgconfig/composefs-storage.pc.in $(BUILD)/native-static-libs.txt FORCE
	sed -e 's|@PREFIX@|$(PREFIX)|' \
	    -e 's|@LIBDIR@|$(call pc_rel,$(LIBDIR))|' \
	    -e 's|@INCLUDEDIR@|$(call pc_rel,$(INCLUDEDIR))|' \
	    -e 's|@VERSION@|$(VERSION)|' \
	    -e "s|@LIBS_PRIVATE@|$$(cat $(BUILD)/native-static-libs.txt)|" \
	    $< >$@

FORCE:

# The build keeps its debug info (the release profile's `debug`); the installed files are stripped:
# the .so and the CLI of everything a run does not need, the archive of its debug sections only
# (a static link needs its symbols). `make install-debug` keeps what was stripped.
install: build $(BUILD)/composefs-storage.pc
	$(INSTALL) -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(PKGCONFIGDIR) \
	    $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man3
	$(INSTALL) -m 0755 $(RELEASE)/$(LIB).so $(DESTDIR)$(LIBDIR)/$(REALNAME)
	$(STRIP) --strip-unneeded $(DESTDIR)$(LIBDIR)/$(REALNAME)
	ln -sfn $(REALNAME) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sfn $(SONAME) $(DESTDIR)$(LIBDIR)/$(LIB).so
	$(INSTALL) -m 0644 $(RELEASE)/$(LIB).a $(DESTDIR)$(LIBDIR)/$(LIB).a
	$(STRIP) --strip-debug $(DESTDIR)$(LIBDIR)/$(LIB).a
	$(INSTALL) -m 0644 include/composefs-storage.h $(DESTDIR)$(INCLUDEDIR)/composefs-storage.h
	$(INSTALL) -m 0644 $(BUILD)/composefs-storage.pc $(DESTDIR)$(PKGCONFIGDIR)/composefs-storage.pc
	$(INSTALL) -m 0755 $(RELEASE)/composefs-storage $(DESTDIR)$(BINDIR)/composefs-storage
	$(STRIP) --strip-unneeded $(DESTDIR)$(BINDIR)/composefs-storage
	$(INSTALL) -m 0644 man/composefs-storage.1 $(DESTDIR)$(MANDIR)/man1/composefs-storage.1
	$(INSTALL) -m 0644 man/composefs-storage.3 $(DESTDIR)$(MANDIR)/man3/composefs-storage.3

# Split debug info in the build-id layout gdb, debuginfod and Debian's -dbgsym packages use; the
# build ids are those of the stripped files `make install` installs (stripping keeps the note).
install-debug: build
	@for f in $(RELEASE)/$(LIB).so $(RELEASE)/composefs-storage; do \
	    id=$$(LC_ALL=C readelf -n $$f | sed -n 's/^ *Build ID: *\([0-9a-f]*\)$$/\1/p'); \
	    [ -n "$$id" ] || { echo "error: $$f has no GNU build id" >&2; exit 1; }; \
	    dir=$(DESTDIR)$(DEBUGDIR)/.build-id/$$(echo $$id | cut -c1-2); \
	    echo "$$f -> $$dir/$$(echo $$id | cut -c3-).debug"; \
	    $(INSTALL) -d $$dir && \
	    $(OBJCOPY) --only-keep-debug --compress-debug-sections $$f $$dir/$$(echo $$id | cut -c3-).debug && \
	    chmod 0644 $$dir/$$(echo $$id | cut -c3-).debug || exit 1; \
	done

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/$(REALNAME) $(DESTDIR)$(LIBDIR)/$(SONAME) $(DESTDIR)$(LIBDIR)/$(LIB).so \
	      $(DESTDIR)$(LIBDIR)/$(LIB).a $(DESTDIR)$(INCLUDEDIR)/composefs-storage.h \
	      $(DESTDIR)$(PKGCONFIGDIR)/composefs-storage.pc $(DESTDIR)$(BINDIR)/composefs-storage \
	      $(DESTDIR)$(MANDIR)/man1/composefs-storage.1 $(DESTDIR)$(MANDIR)/man3/composefs-storage.3

# The same generation as tests/abi.rs's header check (no cbindgen binary needed); scripts/gen-header.sh
# does it with the pinned cbindgen CLI (.tools/cargo/bin) and gives the same bytes.
header:
	CFS_BLESS_HEADER=1 $(CARGO) test --test abi header_is_up_to_date

check-header:
	scripts/check-header.sh

symbols:
	$(CARGO) build --release --lib
	scripts/gen-symbols.sh $(RELEASE)/$(LIB).so

man:
	CFS_BLESS_MAN=1 $(CARGO) test --bin composefs-storage man_page_is_up_to_date

check-symbols:
	$(CARGO) build --release --lib
	scripts/check-symbols.sh $(RELEASE)/$(LIB).so

check:
	scripts/test-all.sh

clean:
	rm -rf $(BUILD)
	$(CARGO) clean
