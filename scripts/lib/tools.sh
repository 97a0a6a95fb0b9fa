# shellcheck shell=bash
# Shared by the scripts that build pinned programs into the tools cache (scripts/control-plane,
# scripts/toolchain, scripts/opensips). Sourced, not run.

# Programs are cached per pinned version outside the clone, so a clean clone on the same
# machine (CI) reuses them; ACM_TOOLS_CACHE moves the cache.
# shellcheck disable=SC2034  # read by the scripts that source this file
cache_root=${ACM_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/acm-platform}
# Upstream source archives no registry serves (their README lists checksums and build facts).
third_party=${ACM_THIRD_PARTY:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)/shared/third-party}
GO_MINIMUM=1.26

# Temporary folders that go when the script exits, whichever way it exits. The list is global
# and the EXIT trap names a function, so nothing in the trap expands a variable that was local
# to the function that made the folder (under `set -u` such a trap failed on every successful
# cold build: "work: unbound variable", after the function had returned).
scratch_dirs=()
remove_scratch_dirs() {
  if ((${#scratch_dirs[@]})); then rm -rf -- "${scratch_dirs[@]}"; fi
}
trap remove_scratch_dirs EXIT

# make_scratch_dir VAR PURPOSE: a new temporary folder in the caller's variable VAR (which may
# be local to the caller), removed at exit.
make_scratch_dir() {
  local dir
  dir=$(mktemp -d "${TMPDIR:-/tmp}/acm-$2.XXXXXX")
  scratch_dirs+=("$dir")
  printf -v "$1" '%s' "$dir"
}

# remove_cgroups NAME: the cgroup folder NAME a daemon made in every hierarchy (the kubelet's
# kubepods, dockerd's docker), deepest first: a cgroup folder goes only with rmdir, and only
# when empty.
remove_cgroups() {
  local hierarchy
  for hierarchy in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
    [[ -d $hierarchy$1 ]] || continue
    find "$hierarchy$1" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
}

go_environment() {
  # Where Go's own installer puts it, for shells that did not read a profile (CI's).
  command -v go >/dev/null || [[ ! -x /usr/local/go/bin/go ]] || export PATH=/usr/local/go/bin:$PATH
  command -v go >/dev/null || { log "needs Go $GO_MINIMUM or newer on PATH"; exit 1; }
  local version
  version=$(go env GOVERSION)
  version=${version#go}
  if [[ $(printf '%s\n%s\n' "$GO_MINIMUM" "$version" | sort -V | head -1) != "$GO_MINIMUM" ]]; then
    log "needs Go $GO_MINIMUM or newer, found $version"
    exit 1
  fi
  # No VCS host is reachable: modules come from the proxy only, checked against go.sum.
  export GOFLAGS=-mod=mod CGO_ENABLED=0 GOPROXY=${GOPROXY:-https://proxy.golang.org}
  if [[ $GOPROXY == *direct* ]]; then
    export GOPROXY=https://proxy.golang.org
  fi
}

# unpack_verified ARCHIVE SHA256 DIR: unpack an upstream archive into DIR after checking it is
# byte for byte the one the build was pinned to.
unpack_verified() {
  local archive=$third_party/$1 expected=$2 into=$3 actual
  [[ -f $archive ]] || { log "missing $archive (the upstream source archives live in ../shared/third-party)"; exit 1; }
  actual=$(sha256sum "$archive" | cut -d' ' -f1)
  if [[ $actual != "$expected" ]]; then
    log "$archive has sha256 $actual, expected $expected: refusing to build from it"
    exit 1
  fi
  mkdir -p "$into"
  tar -xJf "$archive" -C "$into"
}
