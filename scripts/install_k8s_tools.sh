#!/usr/bin/env bash
# helm, kubeconform, promtool and psa-check for the offline chart checks, built once from the Go
# module proxy at pinned versions into .state/tools/bin (a rebuild happens only when a pinned version
# changes; promtool takes about ten minutes the first time).
# psa-check (scripts/psa-check) is this repository's own module: k8s.io/pod-security-admission at the
# version its go.mod and go.sum pin, rebuilt when its sources change.
set -euo pipefail
cd "$(dirname "$0")/.."

HELM_VERSION=v4.3.2
KUBECONFORM_VERSION=v0.8.0
PROMTOOL_VERSION=v0.316.0   # the Go module's version of Prometheus 3.x
TOOLS=${LINEWATCH_TOOLS_DIR:-$PWD/.state/tools}
export GOBIN=$TOOLS/bin GOFLAGS=-buildvcs=false GOTOOLCHAIN=local
mkdir -p "$GOBIN"

install_pinned() {  # name module@version
    local stamp=$TOOLS/$1.version
    if [[ -x $GOBIN/$1 && -f $stamp && $(cat "$stamp") == "$2" ]]; then
        return
    fi
    echo "building $1 ($2) with go install ..." >&2
    go install "$2"
    echo "$2" >"$stamp"
}

build_local() {  # name folder
    local stamp=$TOOLS/$1.version sum
    sum=$(cat "$2"/go.mod "$2"/go.sum "$2"/*.go | sha256sum | cut -d' ' -f1)
    if [[ -x $GOBIN/$1 && -f $stamp && $(cat "$stamp") == "$sum" ]]; then
        return
    fi
    echo "building $1 ($2) with go build ..." >&2
    (cd "$2" && go build -trimpath -o "$GOBIN/$1" .)
    echo "$sum" >"$stamp"
}

command -v go >/dev/null || { echo "install_k8s_tools: needs Go (go install builds helm, kubeconform and promtool)" >&2; exit 1; }
install_pinned helm "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"
install_pinned kubeconform "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION"
install_pinned promtool "github.com/prometheus/prometheus/cmd/promtool@$PROMTOOL_VERSION"
build_local psa-check scripts/psa-check
