#!/usr/bin/env bash
# Build the test cluster once per machine, outside pytest, and cache it outside the checkout:
#
#   - Kubernetes (kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy),
#     etcd, CoreDNS and kube-router, from the Go module proxy's sources, at the versions the
#     go.mod/go.sum files under go/ pin;
#   - the pod sandbox (pause.c from the Kubernetes tree), the test workload (workload/) and the
#     product's connection probe (deploy/probe/), compiled here;
#   - container images of those and of Debian's Python, Redis and PostgreSQL (images.py);
#   - from Debian's packages: containerd, runc, the CNI plugins, iptables, ipset, conntrack.
#
#   cache: ${STACKBLAZE_KUBE_CACHE:-$HOME/.cache/stackblaze-kube}
#
# Each part is cached under a key made of its inputs, so a change to one rebuilds that one.
# The last line of stdout is the bin dir (its sibling images/ holds the image tarballs);
# progress goes to stderr. A warm run takes about a second. Needs root the first time (apt).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE_ROOT=${STACKBLAZE_KUBE_CACHE:-${HOME:-/root}/.cache/stackblaze-kube}
PACKAGES=(containerd runc containernetworking-plugins iptables ipset conntrack
          postgresql redis-server python3 gcc libc6-dev)
STARTED=$SECONDS

log() { printf '[kube-build] %4ds %s\n' "$((SECONDS - STARTED))" "$*" >&2; }
die() { printf '[kube-build] ERROR: %s\n' "$*" >&2; exit 1; }

key_of() { cat "$@" | sha256sum | cut -c1-12; }

command -v go >/dev/null 2>&1 || die "no Go toolchain on PATH (Go 1.26 or newer is needed)"
mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.build.lock"
flock 9 # one build at a time on a machine

# --- 1. Debian packages ----------------------------------------------------------------------
missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' \
    || missing+=("$package")
done
if ((${#missing[@]})); then
  [[ $(id -u) -eq 0 ]] || die "not root: cannot install ${missing[*]} (run this script once as root)"
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Package scripts must not start servers (containerd, PostgreSQL, Redis) through an init
  # system: the tests start what they need themselves.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
  fi
  if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2; then
    apt-get update -qq >&2 || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 \
      || die "apt-get install ${missing[*]} failed"
  fi
  ((created_policy)) && rm -f "$policy"
fi

# --- 2. Go components, each from its pinned module ------------------------------------------
KUBE_VERSION=$(sed -n 's/^require k8s.io\/kubernetes v//p' "$HERE/go/kubernetes/go.mod")
[[ -n $KUBE_VERSION ]] || die "no k8s.io/kubernetes version in go/kubernetes/go.mod"
KUBE_LDFLAGS="-s -w -X k8s.io/component-base/version.gitVersion=v$KUBE_VERSION
  -X k8s.io/component-base/version.gitMajor=${KUBE_VERSION%%.*}
  -X k8s.io/component-base/version.gitMinor=$(cut -d. -f2 <<<"$KUBE_VERSION")
  -X k8s.io/component-base/version.gitTreeState=clean
  -X k8s.io/client-go/pkg/version.gitVersion=v$KUBE_VERSION"

# build_component NAME CGO LDFLAGS PACKAGE...: binaries named after each package's last element.
build_component() {
  local name=$1 cgo=$2 ldflags=$3
  shift 3
  local module=$HERE/go/$name
  local key
  key=$(printf '%s\n%s\n' "$ldflags" "$(go env GOVERSION)" | key_of "$module/go.mod" "$module/go.sum" -)
  local dir=$CACHE_ROOT/$name-$key
  local bins=() package
  for package in "$@"; do
    # go build names a binary after the package's last element, a major version (/v3) aside.
    [[ $package =~ /v[0-9]+$ ]] && package=${package%/*}
    bins+=("$dir/bin/${package##*/}")
  done
  local all=1 bin
  for bin in "${bins[@]}"; do [[ -x $bin ]] || all=0; done
  if ((all)); then
    COMPONENT_DIR=$dir
    return
  fi
  log "building $name ($*); a cold build of everything takes about 15 minutes on 2 cores"
  rm -rf "$dir.tmp"
  mkdir -p "$dir.tmp/bin"
  (cd "$module" && CGO_ENABLED=$cgo go build -trimpath -ldflags "$ldflags" -o "$dir.tmp/bin/" "$@") \
    >"$dir.tmp/build.log" 2>&1 || { tail -n 30 "$dir.tmp/build.log" >&2; die "building $name failed"; }
  rm -rf "$dir"
  mv "$dir.tmp" "$dir"
  log "built $name"
  COMPONENT_DIR=$dir
}

declare -A BINARY_DIRS=()
build_component kubernetes 0 "$KUBE_LDFLAGS" k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy
BINARY_DIRS[kubernetes]=$COMPONENT_DIR
build_component etcd 0 "-s -w" go.etcd.io/etcd/server/v3
# Its package is etcd's server/: name the binary for what it is.
ln -sf server "$COMPONENT_DIR/bin/etcd"
BINARY_DIRS[etcd]=$COMPONENT_DIR
build_component coredns 0 "-s -w" github.com/coredns/coredns
BINARY_DIRS[coredns]=$COMPONENT_DIR
build_component kube-router 0 "-s -w" github.com/cloudnativelabs/kube-router/v2/cmd/kube-router
BINARY_DIRS[kube-router]=$COMPONENT_DIR

# --- 3. What we compile here: the sandbox, the test workload, the product's probe ------------
KUBE_SOURCE=$(cd "$HERE/go/kubernetes" && go mod download -json "k8s.io/kubernetes@v$KUBE_VERSION" \
  | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
PAUSE_C=$KUBE_SOURCE/build/pause/linux/pause.c
[[ -f $PAUSE_C ]] || die "no $PAUSE_C in the Kubernetes module"
TOOLS_KEY=$(printf '%s\n' "$(go env GOVERSION)" "$(gcc --version | head -n 1)" \
  | key_of "$PAUSE_C" "$HERE"/workload/* "$REPO"/deploy/probe/go.mod "$REPO"/deploy/probe/main.go -)
TOOLS=$CACHE_ROOT/tools-$TOOLS_KEY
if [[ ! -x $TOOLS/bin/pause || ! -x $TOOLS/bin/workload || ! -x $TOOLS/bin/stackblaze-probe ]]; then
  log "compiling pause, the test workload and the connection probe"
  rm -rf "$TOOLS.tmp"
  mkdir -p "$TOOLS.tmp/bin"
  gcc -Os -static -Wall -DVERSION="v$KUBE_VERSION-stackblaze" -o "$TOOLS.tmp/bin/pause" "$PAUSE_C"
  strip "$TOOLS.tmp/bin/pause"
  (cd "$HERE/workload" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$TOOLS.tmp/bin/workload" .)
  (cd "$REPO/deploy/probe" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$TOOLS.tmp/bin/stackblaze-probe" .)
  rm -rf "$TOOLS"
  mv "$TOOLS.tmp" "$TOOLS"
fi

# --- 4. The cluster: one folder of links to every binary, and the images --------------------
versions=$(dpkg-query -W -f='${Package} ${Version}\n' postgresql-[0-9]* redis-server 'libpython3*-stdlib' 2>/dev/null | sort)
IMAGES_KEY=$(printf '%s\n' "$TOOLS_KEY" "$versions" | key_of "$HERE/images.py" -)
IMAGES=$CACHE_ROOT/images-$IMAGES_KEY
if [[ ! -f $IMAGES/.complete ]]; then
  log "building container images"
  rm -rf "$IMAGES.tmp"
  python3 "$HERE/images.py" "$IMAGES.tmp" "$TOOLS/bin" || die "building the images failed"
  touch "$IMAGES.tmp/.complete"
  rm -rf "$IMAGES"
  mv "$IMAGES.tmp" "$IMAGES"
fi

CLUSTER_KEY=$(printf '%s\n' "${BINARY_DIRS[@]}" "$TOOLS" "$IMAGES" | key_of -)
CLUSTER=$CACHE_ROOT/cluster-$CLUSTER_KEY
if [[ ! -f $CLUSTER/.complete ]]; then
  rm -rf "$CLUSTER"
  mkdir -p "$CLUSTER/bin"
  for dir in "${BINARY_DIRS[@]}" "$TOOLS"; do
    for binary in "$dir"/bin/*; do ln -sf "$binary" "$CLUSTER/bin/"; done
  done
  ln -s "$IMAGES" "$CLUSTER/images"
  printf '%s\n' "$KUBE_VERSION" >"$CLUSTER/kubernetes-version"
  touch "$CLUSTER/.complete"
  log "test cluster ready: Kubernetes $KUBE_VERSION in $CLUSTER"
fi
echo "$CLUSTER/bin"
