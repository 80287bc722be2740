# Shared by scripts/setup and scripts/test. Sourced, not run.

# The Debian packages banger needs to build and test. Rust itself comes
# from rustup (Debian's rustc is too old for edition 2024).
BANGER_PACKAGES=(build-essential ca-certificates curl git)

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

# Installs whichever of BANGER_PACKAGES are missing; does nothing (and
# needs no network) when all are present.
ensure_packages() {
  local missing=() pkg
  for pkg in "${BANGER_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$'; then
      missing+=("$pkg")
    fi
  done
  if [ "${#missing[@]}" -eq 0 ]; then
    return 0
  fi
  log "installing ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
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
