#!/usr/bin/env bash
# helm and kubeconform for the offline chart checks, built once from the Go module proxy at pinned
# versions into .state/tools/bin (a rebuild happens only when a pinned version changes).
set -euo pipefail
cd "$(dirname "$0")/.."

HELM_VERSION=v4.3.2
KUBECONFORM_VERSION=v0.8.0
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

command -v go >/dev/null || { echo "install_k8s_tools: needs Go (go install builds helm and kubeconform)" >&2; exit 1; }
install_pinned helm "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"
install_pinned kubeconform "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION"
