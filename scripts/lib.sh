# Shared by scripts/setup and scripts/test. Sourced, not run.

# The Debian packages banger needs to build, run and test. Rust itself comes
# from rustup (Debian's rustc is too old for edition 2024).
BANGER_PACKAGES=(
  build-essential ca-certificates curl git
  # banger-init links statically against glibc; tests read cpio archives
  libc6-dev cpio
  # tests: a loopback web server for download entries; a venv for
  # schemathesis (the API contract test)
  python3 python3-venv
  # kernel builds (banger kernel pull generic-6.1)
  linux-source-6.1 bc bison flex libelf-dev libssl-dev xz-utils
  # image builds (banger image pull debian-bookworm); mke2fs -d reads
  # tarballs through libarchive
  mmdebstrap libarchive13 e2fsprogs
  # booting
  qemu-system-x86
  # VMs: bridge and taps, per-VM NAT, the guests' isolation (nft), SSH
  # keys and sessions
  iproute2 iptables nftables openssh-client
  # least privilege: the daemon as its owner (setpriv, useradd in the
  # tests), its units checked with systemd-analyze (no PID 1 needed)
  util-linux passwd systemd
  # tests and bench of registry pulls: a registry on loopback, skopeo to
  # push into it, umoci for the baseline the bench compares against
  docker-registry skopeo umoci
)
# Packages taken from bookworm-backports on Debian 12: mke2fs reads tarballs
# from e2fsprogs 1.47.1 on, and qemu-system-x86 must match the backported
# qemu-utils some machines already carry.
BANGER_BACKPORTS=(e2fsprogs qemu-system-x86)

log() { printf '==> %s\n' "$*" >&2; }

# Runs a command as root: directly when we are root, else through sudo.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    log "need root to run: $* (install sudo or run as root)"
    return 1
  fi
}

apt_install() {
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

codename() {
  (. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
}

# The Debian mirror apt already uses (deb822 or one-line sources).
apt_mirror() {
  local uri
  uri=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n1)
  if [ -z "$uri" ]; then
    uri=$(grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | grep -v security |
      awk '{for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit }}' | head -n1)
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}

installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

mke2fs_reads_tar() {
  # "mke2fs 1.47.2 (1-Jan-2025)" -> 1.47.2 >= 1.47.1
  local v
  v=$(mke2fs -V 2>&1 | awk 'NR == 1 {print $2}')
  [ -n "$v" ] && [ "$(printf '%s\n1.47.1\n' "$v" | sort -V | head -n1)" = "1.47.1" ]
}

# Installs whichever packages are missing; does nothing (and needs no
# network) when all are present.
ensure_packages() {
  local missing=() pkg updated=0
  for pkg in "${BANGER_PACKAGES[@]}"; do
    installed "$pkg" || missing+=("$pkg")
  done
  if [ "$(codename)" = bookworm ]; then
    if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
      log "adding bookworm-backports (for e2fsprogs >= 1.47.1)"
      echo "deb $(apt_mirror) bookworm-backports main" |
        as_root tee /etc/apt/sources.list.d/banger-bookworm-backports.list >/dev/null
    fi
    if ! mke2fs_reads_tar || ! installed qemu-system-x86; then
      log "installing ${BANGER_BACKPORTS[*]} from bookworm-backports"
      as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
      updated=1
      apt_install -t bookworm-backports "${BANGER_BACKPORTS[@]}"
    fi
    missing=()
    for pkg in "${BANGER_PACKAGES[@]}"; do
      installed "$pkg" || missing+=("$pkg")
    done
  fi
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    [ "$updated" -eq 1 ] || as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_install "${missing[@]}"
  fi
  if ! mke2fs_reads_tar; then
    log "warning: $(mke2fs -V 2>&1 | head -n1) cannot build images from tarballs (needs e2fsprogs >= 1.47.1)"
  fi
}

# banger-init runs as PID 1 in the guest's initramfs, where there is no
# dynamic loader: build it static (glibc's static libs come with libc6-dev).
# schemathesis, from PyPI, in a venv of its own outside the repository
# (reused across runs; keyed by version). Exports BANGER_SCHEMATHESIS for
# the contract test (crates/banger-daemon/tests/schemathesis.rs).
SCHEMATHESIS_VERSION=4.32.5
ensure_schemathesis() {
  local venv="${XDG_CACHE_HOME:-$HOME/.cache}/banger-test/schemathesis-$SCHEMATHESIS_VERSION"
  if [ ! -x "$venv/bin/st" ]; then
    log "installing schemathesis $SCHEMATHESIS_VERSION into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv" &&
      "$venv/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" ||
      { rm -rf "$venv"; return 1; }
  fi
  export BANGER_SCHEMATHESIS="$venv/bin/st"
}

build_init() {
  RUSTFLAGS="-C target-feature=+crt-static -C strip=symbols" \
    cargo build --release -p banger-init --target x86_64-unknown-linux-gnu
}

ensure_rust() {
  if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
      export PATH="$HOME/.cargo/bin:$PATH"
    else
      log "cargo not found: install Rust with rustup (https://rustup.rs), then rerun"
      return 1
    fi
  fi
}
