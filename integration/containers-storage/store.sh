# Sourced by e2e.sh and bench.sh: a fresh containers/storage store with composefs on.

# new_store_at DIR: empties DIR (detaching what an earlier run left mounted there, at least the
# overlay driver's bind mount of its home) and writes DIR/storage.conf with use_composefs,
# enable_partial_images and convert_images on, exported as CONTAINERS_STORAGE_CONF.
new_store_at() {
    local dir="$1"
    { grep -F " $dir/" /proc/self/mountinfo || true; } | awk '{print $5}' | sort -r | xargs -r -n1 umount -l
    rm -rf "$dir" && mkdir -p "$dir"
    cat >"$dir/storage.conf" <<CONF
[storage]
driver = "overlay"
graphroot = "$dir/graph"
runroot = "$dir/run"

[storage.options]
pull_options = {enable_partial_images = "true", use_hard_links = "false", convert_images = "true"}

[storage.options.overlay]
use_composefs = "true"
CONF
    export CONTAINERS_STORAGE_CONF="$dir/storage.conf"
}
