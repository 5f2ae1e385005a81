#!/usr/bin/env bash
# Build kube-apiserver and kube-controller-manager (Kubernetes 1.20.2) for the
# test cluster, from Debian bookworm's `kubernetes` source package, and cache
# them outside the checkout.
#
#   bin dir: ${STACKBLAZE_KUBE_CACHE:-$HOME/.cache/stackblaze-kube}/1.20.2/bin
#
# The last line of stdout is the bin dir. Progress and build output go to
# stderr (the build log is also kept in <cache>/1.20.2/build.log).
# Idempotent: if the binaries are already cached, prints the bin dir and exits.
# Needs root the first time (apt-get install); builds offline with Debian's Go
# from the vendored tree (~5-10 min on 2 cores, ~2 GB of temporary disk).
#
# The source package comes from the package sources the machine's apt is
# already configured with: every `deb` entry there is turned into a `deb-src`
# entry in a private apt configuration. No host is named here.
#
#   build.sh --print-sources   prints that derived deb-src configuration, and
#                              does nothing else (no root needed)
#
# Where the machine's sources are is asked of apt-config, so APT_CONFIG (a file
# setting Dir::Etc) points the derivation at another apt configuration.
set -euo pipefail

KUBE_VERSION=1.20.2
DEB_SOURCE=kubernetes
DEB_VERSION=1.20.5+really1.20.2-1.1+deb12u1
# golang-go: compiler; rsync, make, bash: used by kubernetes' hack/ scripts;
# dpkg-dev: apt-get source / dpkg-source; xz-utils: the debian.tar.xz;
# etcd-server: /usr/bin/etcd, needed at test time.
PACKAGES=(golang-go rsync make dpkg-dev xz-utils etcd-server)

CACHE_ROOT=${STACKBLAZE_KUBE_CACHE:-${HOME:-/root}/.cache/stackblaze-kube}
VERSION_DIR=$CACHE_ROOT/$KUBE_VERSION
BIN_DIR=$VERSION_DIR/bin
BINARIES=(kube-apiserver kube-controller-manager)

log() { printf '[kube-build] %s\n' "$*" >&2; }
die() { printf '[kube-build] ERROR: %s\n' "$*" >&2; exit 1; }

have_binaries() {
  local b
  for b in "${BINARIES[@]}"; do
    [[ -x $BIN_DIR/$b ]] || return 1
  done
  command -v etcd >/dev/null 2>&1 || [[ -x /usr/bin/etcd ]]
}

# The machine's one-line sources (sources.list, sources.list.d/*.list), each
# `deb` entry as a `deb-src` entry with the same options, URI, suite and
# components.
machine_deb_src_lines() {
  local file
  for file in "$@"; do
    sed -n -E 's/^[[:space:]]*deb[[:space:]]+/deb-src /p' "$file"
  done
}

# The machine's deb822 sources (sources.list.d/*.sources): each stanza whose
# Types include `deb`, as `Types: deb-src` with its other fields (URIs, Suites,
# Components, Signed-By, ...) kept and comments dropped.
machine_deb_src_stanzas() {
  (($#)) || return 0
  awk '
    function flush() {
      if (is_deb && body != "") {
        if (printed) print ""
        printf "Types: deb-src\n%s", body
        printed = 1
      }
      body = ""; is_deb = 0; in_types = 0
    }
    function note_types(text,    words, n, i) {
      n = split(text, words, /[[:space:]]+/)
      for (i = 1; i <= n; i++) if (words[i] == "deb") is_deb = 1
    }
    FNR == 1 { flush() }
    /^#/ { next }
    /^[[:space:]]*$/ { flush(); next }
    /^[[:space:]]/ { if (in_types) note_types($0); else body = body $0 "\n"; next }
    {
      in_types = 0
      if (tolower(substr($0, 1, 6)) == "types:") {
        in_types = 1
        note_types(substr($0, 7))
        next
      }
      body = body $0 "\n"
    }
    END { flush() }
  ' "$@"
}

# Writes the derived deb-src configuration into <dir>/sources.list and
# <dir>/sources.list.d/machine.sources. Only files apt itself reads count:
# sources.list.d/*.list and *.sources, not *.disabled or other leftovers.
write_deb_src_config() {
  local dir=$1 SOURCE_LIST SOURCE_PARTS
  command -v apt-config >/dev/null 2>&1 || die "no apt-config: this script needs Debian's apt"
  eval "$(apt-config shell SOURCE_LIST Dir::Etc::SourceList/f SOURCE_PARTS Dir::Etc::SourceParts/d)"
  local list_files=() stanza_files=() file
  [[ -f $SOURCE_LIST ]] && list_files+=("$SOURCE_LIST")
  for file in "${SOURCE_PARTS%/}"/*.list; do [[ -f $file ]] && list_files+=("$file"); done
  for file in "${SOURCE_PARTS%/}"/*.sources; do [[ -f $file ]] && stanza_files+=("$file"); done
  mkdir -p "$dir/sources.list.d"
  machine_deb_src_lines "${list_files[@]}" >"$dir/sources.list"
  machine_deb_src_stanzas "${stanza_files[@]}" >"$dir/sources.list.d/machine.sources"
  [[ -s $dir/sources.list || -s $dir/sources.list.d/machine.sources ]] \
    || die "no deb entries in apt's sources ($SOURCE_LIST, ${SOURCE_PARTS%/}/*.list, *.sources): configure apt with a Debian bookworm source, then run this again"
}

case ${1:-} in
  "") ;;
  --print-sources)
    out=$(mktemp -d)
    trap 'rm -rf "$out"' EXIT
    write_deb_src_config "$out"
    echo "# sources.list"
    cat "$out/sources.list"
    echo "# sources.list.d/machine.sources"
    cat "$out/sources.list.d/machine.sources"
    exit 0
    ;;
  *) die "unknown argument $1; usage: build.sh [--print-sources]" ;;
esac

# Fast path: nothing to do.
if have_binaries; then
  echo "$BIN_DIR"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  die "kube binaries not cached in $BIN_DIR (or etcd missing) and not root: cannot apt-get install the build dependencies; run this script once as root"
fi

mkdir -p "$VERSION_DIR" || die "cannot create cache dir $VERSION_DIR"

# Serialise concurrent builds (e.g. several pytest workers) on one machine.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$VERSION_DIR/.build.lock"
  log "waiting for build lock $VERSION_DIR/.build.lock"
  flock 9
  if have_binaries; then
    echo "$BIN_DIR"
    exit 0
  fi
fi

export DEBIAN_FRONTEND=noninteractive

# --- 1. Debian packages -------------------------------------------------------
missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; then
    log "apt-get install failed; running apt-get update and retrying"
    apt-get update -q >&2 || die "apt-get update failed"
    apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 \
      || die "apt-get install ${missing[*]} failed"
  fi
fi
command -v go >/dev/null 2>&1 || [[ -x /usr/lib/go/bin/go ]] || die "no Go compiler after installing golang-go"
command -v etcd >/dev/null 2>&1 || [[ -x /usr/bin/etcd ]] || die "no etcd after installing etcd-server"

# --- 2. Kubernetes kube binaries (may be present if only etcd was missing) -----
build_needed=0
for b in "${BINARIES[@]}"; do
  [[ -x $BIN_DIR/$b ]] || build_needed=1
done

if ((build_needed)); then
  BUILD_DIR=$(mktemp -d "$VERSION_DIR/build.XXXXXX")
  cleanup() { rm -rf "$BUILD_DIR"; }
  trap cleanup EXIT
  BUILD_LOG=$VERSION_DIR/build.log
  : >"$BUILD_LOG"

  # Private apt configuration: its own sources (the machine's, as deb-src),
  # lists dir and cache, so the system's apt sources and state are left
  # untouched.
  APT_DIR=$BUILD_DIR/apt
  mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial"
  write_deb_src_config "$APT_DIR"
  APT_OPTS=(
    -o "Dir::Etc::SourceList=$APT_DIR/sources.list"
    -o "Dir::Etc::SourceParts=$APT_DIR/sources.list.d"
    -o "Dir::State::Lists=$APT_DIR/lists"
    -o "Dir::Cache=$APT_DIR/cache"
    -o "Dir::State::status=/var/lib/dpkg/status"
    -o "APT::Sandbox::User=root"
  )

  log "fetching source index (private apt config in $APT_DIR)"
  apt-get "${APT_OPTS[@]}" update -q >&2 || die "apt-get update (private deb-src config) failed"

  SRC_DIR=$BUILD_DIR/src
  mkdir -p "$SRC_DIR"
  log "downloading source package $DEB_SOURCE=$DEB_VERSION"
  (cd "$SRC_DIR" && apt-get "${APT_OPTS[@]}" source --download-only -q "$DEB_SOURCE=$DEB_VERSION" >&2) \
    || die "apt-get source $DEB_SOURCE=$DEB_VERSION failed"
  dsc=$(find "$SRC_DIR" -maxdepth 1 -name "${DEB_SOURCE}_*.dsc" -print -quit)
  [[ -n $dsc ]] || die "no .dsc downloaded for $DEB_SOURCE=$DEB_VERSION"

  TREE=$SRC_DIR/tree
  log "unpacking $(basename "$dsc") (Debian patches get applied)"
  dpkg-source --no-check -x "$dsc" "$TREE" >&2 || die "dpkg-source -x failed"

  # As debian/rules does: GOPATH=$(CURDIR)/.go with .go/src/k8s.io/kubernetes
  # a symlink back to the tree itself, Debian's Go first in PATH, CGO off.
  # hack/lib/init.sh builds in GOPATH mode (GO111MODULE=off) from vendor/, so
  # no module flags: GOFLAGS must stay empty (hack/lib/golang.sh derives the
  # build tags from it), GOPROXY=off makes sure nothing is fetched.
  mkdir -p "$TREE/.go/src/k8s.io"
  [[ -L $TREE/.go/src/k8s.io/kubernetes ]] || ln -s ../../.. "$TREE/.go/src/k8s.io/kubernetes"

  log "building kube-apiserver and kube-controller-manager (log: $BUILD_LOG); this takes several minutes"
  start=$SECONDS
  mkdir -p "$BUILD_DIR/home" "$BUILD_DIR/gocache" "$BUILD_DIR/tmp"
  if ! (
    cd "$TREE" &&
      env \
        PATH="/usr/lib/go/bin:$PATH" \
        HOME="$BUILD_DIR/home" \
        TMPDIR="$BUILD_DIR/tmp" \
        GOPATH="$TREE/.go" \
        GOCACHE="$BUILD_DIR/gocache" \
        GOPROXY=off \
        GOFLAGS= \
        CGO_ENABLED=0 \
        make WHAT="cmd/kube-apiserver cmd/kube-controller-manager"
  ) 2>&1 | tee -a "$BUILD_LOG" >&2; then
    die "make failed; see $BUILD_LOG"
  fi
  log "build finished in $((SECONDS - start))s"

  mkdir -p "$BIN_DIR"
  for b in "${BINARIES[@]}"; do
    src=$TREE/_output/bin/$b
    [[ -x $src ]] || src=$TREE/_output/local/bin/linux/$(dpkg --print-architecture)/$b
    [[ -x $src ]] || die "build produced no $b"
    # copy then rename, so a half-copied binary never looks cached
    cp "$src" "$BIN_DIR/.$b.tmp"
    chmod 0755 "$BIN_DIR/.$b.tmp"
    mv -f "$BIN_DIR/.$b.tmp" "$BIN_DIR/$b"
  done
  cleanup
  trap - EXIT
fi

have_binaries || die "binaries still missing in $BIN_DIR after the build"
"$BIN_DIR/kube-apiserver" --version >&2 || true
echo "$BIN_DIR"
