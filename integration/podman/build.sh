#!/usr/bin/env bash
# Builds podman twice from the snapshot in ../shared/peers, offline: stock, and with the
# containers/storage adapter (integration/containers-storage/patches) applied to its vendored
# go.podman.io/storage and linked to this library through pkg-config (a staged `make install`).
# Sourced by run.sh, which sets $scratch, $go and the staged library's environment (stage_library)
# and builds mkcomposefs for stock.
#
# Outputs: $scratch/bin-stock/podman, $scratch/bin-patched/podman.

podman_tags="http2legacy grpcnotrace apparmor libsqlite3 systemd libsubid seccomp exclude_graphdriver_btrfs containers_image_openpgp"
binding_module="github.com/composefs-storage/composefs-storage/bindings/go"

# podman_tree NAME: a fresh podman tree.
podman_tree() {
    local dir="$scratch/$1"
    rm -rf "$dir" && mkdir -p "$dir"
    zstd -dc "$peers/podman-c6580b4a.tar.zst" | tar -x -C "$dir" --strip-components=1
}

# vendor_binding DIR: the Go binding as a vendored module of the podman tree DIR (it has no
# module proxy to come from): the package files, a go.mod requirement and vendor/modules.txt lines.
vendor_binding() {
    local dir="$1"
    mkdir -p "$dir/vendor/$binding_module"
    tar -C "$ROOT/bindings/go" --exclude='*_test.go' -c . | tar -x -C "$dir/vendor/$binding_module"
    printf '\nrequire %s v0.0.0-local\n' "$binding_module" >>"$dir/go.mod"
    printf '# %s v0.0.0-local\n## explicit; go 1.21\n%s\n%s/cstorage\n' \
        "$binding_module" "$binding_module" "$binding_module" >>"$dir/vendor/modules.txt"
}

# build_podman NAME TAGS: go build of ./cmd/podman into $scratch/bin-NAME.
build_podman() {
    local name="$1" tags="$2"
    mkdir -p "$scratch/bin-$name"
    (cd "$scratch/$name" && GOFLAGS="-mod=vendor -trimpath" "$go" build -tags "$tags" -o "$scratch/bin-$name/podman" ./cmd/podman) \
        >"$scratch/build-$name.log" 2>&1 ||
        { tail -n 30 "$scratch/build-$name.log"; echo "error: building $name podman failed" >&2; exit 1; }
    ls -l "$scratch/bin-$name/podman"
}

step "stock podman"
podman_tree stock
build_podman stock "$podman_tags"

step "patched podman (vendor/go.podman.io/storage + integration/containers-storage/patches, tag libcomposefs_storage)"
podman_tree patched
vendor_binding "$scratch/patched"
for p in "$ROOT"/integration/containers-storage/patches/*.patch; do
    echo "applying $(basename "$p") to vendor/go.podman.io/storage"
    # The series is against container-libs' storage/ directory: strip a/storage/.
    patch -d "$scratch/patched/vendor/go.podman.io/storage" -p2 --batch --forward --quiet <"$p"
done
build_podman patched "$podman_tags libcomposefs_storage"
LD_LIBRARY_PATH="$libdir" ldd "$scratch/bin-patched/podman" | grep -F libcomposefs_storage ||
    { echo "error: the patched podman does not link libcomposefs_storage" >&2; exit 1; }
