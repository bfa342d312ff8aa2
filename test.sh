#!/usr/bin/env bash
# Installs what the tests need, then runs the formatting check, the lints and every test.
#
#   ./test.sh             everything
#   ./test.sh NAME...     only tests whose name contains NAME (lints still run)
#
# ODIGOS_VENV chooses where the Python virtualenv with the OpenTelemetry SDK lives (default .venv);
# ODIGOS_NODE_DIR where the Node.js OpenTelemetry SDK is installed (default tests/node);
# ODIGOS_UI_NODE_DIR where the UI's npm packages are installed (default ui/; elsewhere, ui/node_modules
# links there);
# ODIGOS_GO_DIR where the Go test server is built (default target/go);
# ODIGOS_K8S_NODE where Kubernetes (API server, etcd, everything a node runs) is built for the
# Kubernetes tests (default ~/.cache/odigos-rs/k8s-node); ODIGOS_HELM_DIR where helm and kubectl
# are put (default ~/.cache/odigos-rs/helm).
set -euo pipefail
cd "$(dirname "$0")"

step() { printf '\n== %s\n' "$*"; }

step "system packages: clang (builds odiglet's eBPF programs), curl, chromium (the UI's browser tests), containerd and the rest of a Kubernetes node (the cluster tests)"
missing=()
command -v clang >/dev/null || missing+=(clang)
command -v curl >/dev/null || missing+=(curl)
[ -x /usr/bin/chromium ] || missing+=(chromium)
for tool in containerd runc iptables conntrack; do
    command -v $tool >/dev/null || missing+=($tool)
done
[ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
if ((${#missing[@]})); then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "missing: ${missing[*]} (install with: sudo apt-get install ${missing[*]})"
    fi
fi
clang --version | head -1 || true

step "go: the Go test server"
go=/usr/lib/go-1.23/bin/go
if [ ! -x "$go" ] && [ "$(id -u)" = 0 ]; then
    tests/go/install-go.sh
fi
go_dir="${ODIGOS_GO_DIR:-$PWD/target/go}"
if [ -x "$go" ]; then
    (cd tests/go/app && GOTOOLCHAIN=local GOFLAGS=-buildvcs=false "$go" build -o "$go_dir/go-app" .)
    export ODIGOS_TEST_GO_APP="$go_dir/go-app"
    "$go" version
else
    echo "no Go 1.23 at $go (as root, tests/go/install-go.sh installs it): the Go server's tests fail under CI=true"
fi

venv="${ODIGOS_VENV:-$PWD/.venv}"
step "python: OpenTelemetry SDK in $venv"
if ! "$venv/bin/python" -c 'import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.grpc, opentelemetry._opamp, kubernetes_validate, otel_collector' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/python/requirements.txt
fi
"$venv/bin/python" -c 'import opentelemetry.sdk.version as v; print("opentelemetry-sdk", v.__version__)'
export ODIGOS_TEST_PYTHON="$venv/bin/python"

node_dir="${ODIGOS_NODE_DIR:-$PWD/tests/node}"
step "node: OpenTelemetry SDK in $node_dir"
# Installed again whenever the lock file changes.
if ! cmp -s tests/node/package-lock.json "$node_dir/node_modules/.odigos-lock.json"; then
    mkdir -p "$node_dir"
    if [ "$node_dir" != "$PWD/tests/node" ]; then
        cp tests/node/package.json tests/node/package-lock.json "$node_dir/"
    fi
    npm ci --prefix "$node_dir" --no-audit --no-fund --loglevel=error
    cp tests/node/package-lock.json "$node_dir/node_modules/.odigos-lock.json"
fi
export ODIGOS_TEST_NODE_MODULES="$node_dir/node_modules"
NODE_PATH="$ODIGOS_TEST_NODE_MODULES" node -e "require('@opentelemetry/exporter-trace-otlp-grpc'); console.log('node', process.version, 'with the OpenTelemetry SDK')"

ui_modules="${ODIGOS_UI_NODE_DIR:-$PWD/ui}/node_modules"
step "ui: npm packages in $ui_modules; the committed ui/dist must be what ui/ builds"
if ! cmp -s ui/package-lock.json "$ui_modules/.odigos-lock.json"; then
    ui_dir="$(dirname "$ui_modules")"
    mkdir -p "$ui_dir"
    if [ "$ui_dir" != "$PWD/ui" ]; then
        cp ui/package.json ui/package-lock.json "$ui_dir/"
    fi
    npm ci --prefix "$ui_dir" --no-audit --no-fund --loglevel=error
    cp ui/package-lock.json "$ui_modules/.odigos-lock.json"
fi
if [ "$ui_modules" != "$PWD/ui/node_modules" ]; then
    ln -sfn "$ui_modules" ui/node_modules
fi
export ODIGOS_UI_NODE_MODULES="$ui_modules"
built="$(mktemp -d)"
(cd ui && npx tsc --noEmit && npx vite build --outDir "$built" --emptyOutDir --logLevel error)
if ! diff -r ui/dist "$built"; then
    echo "ui/dist differs from what ui/ builds: run (cd ui && npm run build) and commit ui/dist"
    exit 1
fi
rm -rf "$built"

export ODIGOS_K8S_NODE="${ODIGOS_K8S_NODE:-$HOME/.cache/odigos-rs/k8s-node}"
step "kubernetes: what a node runs, and etcd, in $ODIGOS_K8S_NODE"
tests/k8s/build-kubernetes.sh "$ODIGOS_K8S_NODE"

export ODIGOS_HELM_DIR="${ODIGOS_HELM_DIR:-$HOME/.cache/odigos-rs/helm}"
step "helm and kubectl in $ODIGOS_HELM_DIR"
tests/k8s/fetch-helm.sh "$ODIGOS_HELM_DIR" "$venv/bin/python"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "tests"
# The end-to-end tests run the real binary.
cargo build -p odigos
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast "$@"
else
    cargo test --workspace --no-fail-fast -- "$@"
fi
