# Sourced by the podman harness: a podman environment per store on this kind of machine (Debian 12
# has no containers-common; podman 6 needs cgroup v2 and runc, see ../shared/peers/README.md), and
# the local registry.
#
# Needs: $scratch, $inputs.

# podman_env BUILD STORE: writes STORE/{storage,containers,registries}.conf and policy.json for a
# fresh store of BUILD (stock or patched) with composefs and convert_images on, and exports the
# variables that point podman at them. `pm ARGS...` then runs that build's podman on that store.
podman_env() {
    local build="$1" store="$2"
    rm -rf "$store" && mkdir -p "$store"
    cat >"$store/storage.conf" <<CONF
[storage]
driver = "overlay"
graphroot = "$store/graph"
runroot = "$store/run"

[storage.options]
pull_options = {enable_partial_images = "true", use_hard_links = "false", convert_images = "true"}

[storage.options.overlay]
use_composefs = "true"
CONF
    cat >"$store/containers.conf" <<CONF
[containers]
pids_limit = 0
netns = "none"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$store/events.log"
static_dir = "$store/static"
tmp_dir = "$store/tmp"
volume_path = "$store/volumes"
CONF
    cat >"$store/registries.conf" <<CONF
unqualified-search-registries = []

[[registry]]
location = "127.0.0.1:5000"
insecure = true
CONF
    # The signature policy: given to the commands that take --signature-policy, and found by the
    # others (save) in $HOME/.config/containers, a home of the store's own.
    mkdir -p "$store/home/.config/containers"
    echo '{"default": [{"type": "insecureAcceptAnything"}]}' >"$store/home/.config/containers/policy.json"
    export CONTAINERS_STORAGE_CONF="$store/storage.conf" CONTAINERS_CONF="$store/containers.conf" \
        CONTAINERS_REGISTRIES_CONF="$store/registries.conf" PODMAN_POLICY="$store/home/.config/containers/policy.json" \
        HOME="$store/home"
    PODMAN_BIN="$scratch/bin-$build/podman"
    if [ "$build" = stock ]; then PODMAN_PATH="$scratch/composefs/build/tools:$sys_path"; else PODMAN_PATH="$sys_path"; fi
}

# pm_argv ARGS...: sets PM_ARGV to the command line of this build's podman on this store (the
# signature policy given where podman takes it), for callers that exec it (/usr/bin/time).
pm_argv() {
    local cmd="$1"
    shift
    PM_ARGV=(env PATH="$PODMAN_PATH" "$PODMAN_BIN" "$cmd")
    case "$cmd" in pull | push | load) PM_ARGV+=(--signature-policy "$PODMAN_POLICY") ;; esac
    PM_ARGV+=("$@")
}

# pm ARGS...: runs it.
pm() {
    pm_argv "$@"
    "${PM_ARGV[@]}"
}

# registry_start DIR: Debian's docker-registry on 127.0.0.1:5000 with its storage and access log
# in DIR; registry_stop stops it.
registry_start() {
    local dir="$1"
    mkdir -p "$dir/data"
    cat >"$dir/config.yml" <<CONF
version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:5000
CONF
    docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 &
    registry_pid=$!
    local i
    for i in $(seq 50); do
        curl -fsS http://127.0.0.1:5000/v2/ >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "error: the registry did not start: $(tail -n 3 "$dir/registry.log")" >&2
    return 1
}

registry_stop() {
    [ -n "${registry_pid:-}" ] || return 0
    kill "$registry_pid" 2>/dev/null || true
    wait "$registry_pid" 2>/dev/null || true
    registry_pid=""
}

# blob_bytes_served LOG DIGEST [FROM_LINE]: bytes the registry sent for blob DIGEST (sha256:...)
# in its access log, from line FROM_LINE on (GET answers, 200 or 206).
blob_bytes_served() {
    local log="$1" digest="$2" from="${3:-1}"
    tail -n +"$from" "$log" | grep -F "\"GET /v2/" | grep -F "/blobs/$digest " |
        awk '{for (i = 1; i <= NF; i++) if ($i ~ /^(200|206)$/ && $(i+1) ~ /^[0-9]+$/) {s += $(i+1); break}} END {print s + 0}'
}
