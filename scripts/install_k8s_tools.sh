#!/usr/bin/env bash
# helm, kubeconform, rules-check and psa-check for the offline chart checks, built once from the Go
# module proxy at pinned versions into .state/tools/bin (a rebuild happens only when a pinned version
# changes).
# rules-check (scripts/rules-check) and psa-check (scripts/psa-check) are this repository's own modules:
# Prometheus's rule-file and PromQL parsers (what `promtool check rules` runs, without promtool's TSDB
# and service-discovery SDKs) and k8s.io/pod-security-admission, at the versions their go.mod and go.sum
# pin, rebuilt when their sources change.
# One build at a time: a second run (another pytest-xdist worker's tests/support/helm.py tool()) waits on
# the lock, then finds the tools built. Each binary is moved into place whole, so a test that finds it
# present never runs a half-written one.
set -euo pipefail
cd "$(dirname "$0")/.."

HELM_VERSION=v4.3.2
KUBECONFORM_VERSION=v0.8.0
TOOLS=${LINEWATCH_TOOLS_DIR:-$PWD/.state/tools}
BIN=$TOOLS/bin
export GOFLAGS=-buildvcs=false GOTOOLCHAIN=local
mkdir -p "$BIN" "$TOOLS/building"
exec 9>"$TOOLS/build.lock"
flock 9

install_pinned() {  # name module@version
    local stamp=$TOOLS/$1.version
    if [[ -x $BIN/$1 && -f $stamp && $(cat "$stamp") == "$2" ]]; then
        return
    fi
    echo "building $1 ($2) with go install ..." >&2
    GOBIN=$TOOLS/building go install "$2"
    mv "$TOOLS/building/$1" "$BIN/$1"
    echo "$2" >"$stamp"
}

build_local() {  # name folder
    local stamp=$TOOLS/$1.version sum
    sum=$(cat "$2"/go.mod "$2"/go.sum "$2"/*.go | sha256sum | cut -d' ' -f1)
    if [[ -x $BIN/$1 && -f $stamp && $(cat "$stamp") == "$sum" ]]; then
        return
    fi
    echo "building $1 ($2) with go build ..." >&2
    (cd "$2" && go build -trimpath -o "$TOOLS/building/$1" .)
    mv "$TOOLS/building/$1" "$BIN/$1"
    echo "$sum" >"$stamp"
}

command -v go >/dev/null || { echo "install_k8s_tools: needs Go (every tool is built from source)" >&2; exit 1; }
install_pinned helm "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"
install_pinned kubeconform "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION"
build_local rules-check scripts/rules-check
build_local psa-check scripts/psa-check
