#!/usr/bin/env bash
# System dependencies of the real-server tests and `make demo`:
#   * redis-server (Debian package)
#   * a JDK >= 17 and Maven, to fetch and run the Kafka broker jars
#   * the Kafka broker jars themselves (scripts/kafka_jars.sh)
#   * chromium + chromium-driver (Debian packages), for the dashboard's browser test
#   * strace (Debian package): the no-phoning-home tests trace every connect() of a worker
#   * Aravis (GigE Vision / USB3 Vision cameras through GObject introspection) with its GigE Vision
#     camera simulator, and the headers PyGObject builds against (the `camera` extra)
#   * mosquitto, the MQTT broker of the MQTT sink's tests
# Idempotent and non-interactive: installs only what is missing, runs
# `apt-get update` only when apt cannot find a package. Runs as root (CI) or
# through passwordless sudo.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export DEBIAN_FRONTEND=noninteractive

log() { echo "install_system_deps: $*" >&2; }

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
  fi
fi

APT_UPDATED=0
apt_update_once() {
  if [[ "$APT_UPDATED" -eq 0 ]]; then
    log "apt-get update"
    "${SUDO[@]}" apt-get update -q >&2
    APT_UPDATED=1
  fi
}

apt_has_candidate() {  # apt knows a version of package $1
  local candidate
  candidate="$(apt-cache policy "$1" 2>/dev/null | sed -n 's/^ *Candidate: *//p')"
  [[ -n "$candidate" && "$candidate" != "(none)" ]]
}

apt_install() {  # apt_install PKG...
  if ! command -v apt-get >/dev/null 2>&1; then
    log "missing $*, and no apt-get here: install them with your package manager"
    return 1
  fi
  if [[ "$(id -u)" -ne 0 && ${#SUDO[@]} -eq 0 ]]; then
    log "missing $*: run as root (or with passwordless sudo), or: apt-get install -y $*"
    return 1
  fi
  local pkg
  for pkg in "$@"; do
    apt_has_candidate "$pkg" || apt_update_once
  done
  log "apt-get install -y $*"
  if ! "${SUDO[@]}" apt-get install -y -q --no-install-recommends "$@" >&2; then
    # stale package lists (404 on a superseded .deb): refresh once and retry
    [[ "$APT_UPDATED" -eq 0 ]] || return 1
    apt_update_once
    "${SUDO[@]}" apt-get install -y -q --no-install-recommends "$@" >&2
  fi
}

java_major() {
  java -version 2>&1 | sed -n 's/.*version "\([0-9]*\)[."].*/\1/p' | head -n1
}

# --- redis-server -----------------------------------------------------------------
if command -v redis-server >/dev/null 2>&1 || [[ -x /usr/bin/redis-server ]]; then
  log "redis-server: $(redis-server --version 2>/dev/null | head -n1 || echo present)"
else
  apt_install redis-server
fi

# --- JDK 17+ and Maven ------------------------------------------------------------
missing=()
if ! command -v java >/dev/null 2>&1; then
  missing+=(openjdk-17-jdk-headless)
elif [[ "$(java_major)" =~ ^[0-9]+$ && "$(java_major)" -lt 17 ]]; then
  log "java $(java_major) is too old for Kafka 4.x (needs 17+)"
  missing+=(openjdk-17-jdk-headless)
fi
command -v mvn >/dev/null 2>&1 || missing+=(maven)
if [[ ${#missing[@]} -gt 0 ]]; then
  apt_install "${missing[@]}"
fi
command -v java >/dev/null 2>&1 || { log "java still missing"; exit 1; }
command -v mvn >/dev/null 2>&1 || { log "mvn still missing"; exit 1; }
log "java $(java_major), $(mvn -v 2>/dev/null | sed -e 's/\x1b\[[0-9;]*m//g' | head -n1)"

# --- headless Chromium and its WebDriver (tests/integration/test_dashboard.py) ---------
browser_missing=()
[[ -x /usr/bin/chromium ]] || browser_missing+=(chromium)
[[ -x /usr/bin/chromedriver ]] || browser_missing+=(chromium-driver)
if [[ ${#browser_missing[@]} -gt 0 ]]; then
  apt_install "${browser_missing[@]}"
fi
log "$(/usr/bin/chromium --version 2>/dev/null | head -n1 || echo 'chromium present')"

# --- strace (tests/integration/test_no_phoning_home.py) ------------------------------
command -v strace >/dev/null 2>&1 || apt_install strace
log "$(strace -V 2>/dev/null | head -n1 || echo 'strace present')"

# --- Aravis (GenICam cameras), its camera simulator, PyGObject's build deps; Mosquitto ----
line_missing=()
command -v arv-fake-gv-camera-0.8 >/dev/null 2>&1 || line_missing+=(aravis-tools)
[[ -e /usr/lib/x86_64-linux-gnu/girepository-1.0/Aravis-0.8.typelib ]] \
  || ls /usr/lib/*/girepository-1.0/Aravis-0.8.typelib >/dev/null 2>&1 || line_missing+=(gir1.2-aravis-0.8)
pkg-config --exists gobject-introspection-1.0 2>/dev/null || line_missing+=(libgirepository1.0-dev)
pkg-config --exists cairo 2>/dev/null || line_missing+=(libcairo2-dev)
command -v pkg-config >/dev/null 2>&1 || line_missing+=(pkg-config)
command -v mosquitto >/dev/null 2>&1 || [[ -x /usr/sbin/mosquitto ]] || line_missing+=(mosquitto)
if [[ ${#line_missing[@]} -gt 0 ]]; then
  apt_install "${line_missing[@]}"
fi
log "aravis $(arv-fake-gv-camera-0.8 --help >/dev/null 2>&1 && echo present || echo missing), mosquitto $(/usr/sbin/mosquitto -h 2>/dev/null | sed -n 's/^mosquitto version //p' | head -n1)"

# --- Kafka broker jars --------------------------------------------------------------
bash "$ROOT/scripts/kafka_jars.sh"
log "ok"
