# Sourced by the integration harnesses (containers-storage/, podman/) after scripts/lib.sh: the
# steps both take.

# stage_library: builds this library and installs it under build/stage (DESTDIR, prefix
# /usr/local) for cgo to link through pkg-config, and exports what finds it there. Sets $stage,
# $prefix and $libdir. CGO_CFLAGS carries a digest of the staged header and library, because Go's
# build cache does not look at C headers and libraries outside the module.
stage_library() {
    stage="$ROOT/build/stage" prefix=/usr/local
    make -C "$ROOT" --no-print-directory build >/dev/null
    make -C "$ROOT" --no-print-directory install DESTDIR="$stage" PREFIX="$prefix" >/dev/null
    libdir="$stage$prefix/lib"
    export PKG_CONFIG_PATH="$libdir/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$stage"
    export CGO_CFLAGS="-O2 -g -DCFS_STAGE_DIGEST=$(cat "$stage$prefix/include/composefs-storage.h" "$libdir"/libcomposefs_storage.* | sha256sum | cut -c1-16)"
    echo "pkg-config --libs composefs-storage: $(pkg-config --libs composefs-storage)"
}

# build_mkcomposefs: mkcomposefs 1.0.8 from ../shared/peers ($peers), built once in
# $scratch/composefs, which stock containers/storage execs from PATH. Sets $mkcomposefs_dir.
build_mkcomposefs() {
    local src="$scratch/composefs"
    if ! [ -x "$src/build/tools/mkcomposefs" ]; then
        rm -rf "$src" && mkdir -p "$src"
        zstd -dc "$peers/composefs-1.0.8.tar.zst" | tar -x -C "$src" --strip-components=1
        # Not against the staged library's pkg-config settings: meson would look for libcrypto there.
        (unset PKG_CONFIG_PATH PKG_CONFIG_SYSROOT_DIR && cd "$src" && meson setup build -Dman=disabled -Dfuse=disabled && ninja -C build) >"$scratch/composefs-build.log" 2>&1 ||
            { tail -n 20 "$scratch/composefs-build.log"; echo "error: building mkcomposefs failed" >&2; exit 1; }
    fi
    mkcomposefs_dir="$src/build/tools"
    echo "$mkcomposefs_dir/mkcomposefs"
}
