#!/usr/bin/env bash
# A real single-node Kubernetes 1.20 for the tests, inside a network namespace of its own:
# containerd (Debian's, with runc and the bridge CNI), etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kube-proxy and the kubelet. Pods really run.
#
# Usage: tests/k8s/cluster.sh up [BIN_DIR] | down | import IMAGE.tar
#   up      starts the cluster (stopping a previous one first); prints the kubeconfig's path.
#   down    stops everything it started and removes its pods, mounts and network namespace.
#   import  loads a docker-archive image (tests/k8s/pack-image.sh makes them) into the node.
#   BIN_DIR holds what tests/k8s/build-kubernetes.sh builds ($ODIGOS_K8S_NODE by default).
#   The state lives in $ODIGOS_K8S_CLUSTER_DIR (/var/tmp/odigos-k8s): logs/, pki/, and
#   admin.kubeconfig for kubectl and the tests.
#
# Addresses, all inside what this script creates: the namespace `odigos-k8s` holds the node at
# 10.213.0.2 (API server on 6443), joined to this host by a veth pair whose host end is
# 10.213.0.1; pods get 10.214.0.0/16 on the bridge cni0 and Services 10.215.0.0/16. The host
# routes both ranges to the node, so tests reach pods and ClusterIPs directly. There is no
# registry (images are imported with `import_image`, manifests use imagePullPolicy: Never) and
# no cluster DNS.
#
# One cluster per machine: the kubelet keeps pod logs in /var/log/pods whatever its root is.
# Needs root, iproute2, openssl, containerd, runc, containernetworking-plugins, iptables and
# conntrack (Debian packages).
set -euo pipefail

T=${ODIGOS_K8S_CLUSTER_DIR:-/var/tmp/odigos-k8s}
NETNS=odigos-k8s
HOST_IP=10.213.0.1
NODE_IP=10.213.0.2
POD_CIDR=10.214.0.0/16
SERVICE_CIDR=10.215.0.0/16
API_SERVICE_IP=10.215.0.1
NODE=odigos-node
SOCK=$T/containerd/containerd.sock

usage() { echo "usage: cluster.sh up [BIN_DIR] | down | import IMAGE.tar" >&2; exit 2; }
in_node() { nsenter --net="/run/netns/$NETNS" "$@"; }

start() { # name command...: in the node's network namespace, detached; pid in run/NAME.pid
  local name=$1
  shift
  # nsenter and setsid exec, so the pid is the command's.
  nsenter --net="/run/netns/$NETNS" setsid "$@" >"$T/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$T/run/$name.pid"
}

wait_for() { # what seconds command...
  local what=$1 seconds=$2
  shift 2
  for ((i = 0; i < seconds * 2; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  echo "cluster.sh: $what not up after ${seconds}s; its log:" >&2
  tail -n 30 "$T/logs/$what.log" >&2 2>/dev/null || true
  return 1
}

certificates() {
  local d=$T/pki
  mkdir -p "$d"
  (
    cd "$d"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 365 -subj /CN=odigos-k8s-ca 2>/dev/null
    sign() { # name subject [subjectAltName]: serving and client when a SAN is given
      openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
      if [[ -n ${3:-} ]]; then
        printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$3" >"$1.ext"
      else
        printf 'extendedKeyUsage=clientAuth\n' >"$1.ext"
      fi
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" -days 365 -extfile "$1.ext" 2>/dev/null
    }
    sign apiserver /CN=kube-apiserver "IP:127.0.0.1,IP:$NODE_IP,IP:$API_SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    sign kubelet-serving "/CN=$NODE" "IP:$NODE_IP,DNS:$NODE"
    sign admin /O=system:masters/CN=admin
    sign controller-manager /CN=system:kube-controller-manager
    sign scheduler /CN=system:kube-scheduler
    sign kube-proxy /CN=system:kube-proxy
    sign kubelet "/O=system:nodes/CN=system:node:$NODE"
    sign apiserver-kubelet /O=system:masters/CN=kube-apiserver-kubelet-client
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  )
  for user in admin controller-manager scheduler kube-proxy kubelet; do
    cat >"$T/$user.kubeconfig" <<YAML
apiVersion: v1
kind: Config
clusters: [{name: odigos-k8s, cluster: {server: "https://$NODE_IP:6443", certificate-authority: $d/ca.crt}}]
users: [{name: $user, user: {client-certificate: $d/$user.crt, client-key: $d/$user.key}}]
contexts: [{name: $user@odigos-k8s, context: {cluster: odigos-k8s, user: $user}}]
current-context: $user@odigos-k8s
YAML
  done
}

network() {
  ip netns add $NETNS
  ip link add odigos-k8s type veth peer name eth0 netns $NETNS
  ip addr add $HOST_IP/24 dev odigos-k8s
  ip link set odigos-k8s up
  in_node ip link set lo up
  in_node ip addr add $NODE_IP/24 dev eth0
  in_node ip link set eth0 up
  in_node ip route add default via $HOST_IP
  ip route add $POD_CIDR via $NODE_IP
  ip route add $SERVICE_CIDR via $NODE_IP
  in_node sysctl -qw net.ipv4.ip_forward=1
  in_node sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || true
}

configs() {
  mkdir -p "$T/cni/net.d"
  # restrict_oom_score_adj: root here may lack CAP_SYS_RESOURCE, and runc then fails every
  # sandbox with "can't get final child's PID from pipe" when it lowers oom_score_adj.
  cat >"$T/containerd.toml" <<TOML
version = 2
root = "$T/containerd/root"
state = "$T/containerd/state"
[grpc]
  address = "$SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/pause:1"
  disable_apparmor = true
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$T/containerd/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$T/cni/net.d"
    max_conf_num = 1
TOML
  cat >"$T/cni/net.d/10-bridge.conflist" <<JSON
{"cniVersion": "0.4.0", "name": "odigos-k8s", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$T/cni/ipam",
            "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
JSON
  : >"$T/resolv.conf"
  cat >"$T/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication: {anonymous: {enabled: false}, webhook: {enabled: true}, x509: {clientCAFile: $T/pki/ca.crt}}
authorization: {mode: Webhook}
tlsCertFile: $T/pki/kubelet-serving.crt
tlsPrivateKeyFile: $T/pki/kubelet-serving.key
cgroupDriver: cgroupfs
failSwapOn: false
readOnlyPort: 0
resolvConf: $T/resolv.conf
imageGCHighThresholdPercent: 100
evictionHard: {memory.available: 100Mi}
YAML
  cat >"$T/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $T/kube-proxy.kubeconfig}
mode: iptables
clusterCIDR: $POD_CIDR
hostnameOverride: $NODE
bindAddress: $NODE_IP
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
conntrack: {maxPerCore: 0}
YAML
}

# import_image TAR: loads a docker-archive into the node's containerd.
import_image() {
  ctr --address "$SOCK" -n k8s.io images import "$1" >/dev/null
}

up() {
  local bin=$1
  for c in etcd kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet kubectl pause; do
    [[ -x $bin/$c ]] || { echo "cluster.sh: no $c in $bin (tests/k8s/build-kubernetes.sh $bin)" >&2; exit 1; }
  done
  for c in containerd runc ctr iptables conntrack openssl nsenter; do
    command -v $c >/dev/null || { echo "cluster.sh: $c is required (apt-get install containerd runc containernetworking-plugins iptables conntrack openssl)" >&2; exit 1; }
  done
  [[ -x /usr/lib/cni/bridge ]] || { echo "cluster.sh: no CNI plugins in /usr/lib/cni (apt-get install containernetworking-plugins)" >&2; exit 1; }
  down >/dev/null 2>&1 || true
  mkdir -p "$T"/{logs,run,kubelet,etcd}
  echo "$bin" >"$T/bin"
  certificates
  network
  configs

  start containerd containerd --config "$T/containerd.toml"
  wait_for containerd 30 ctr --address "$SOCK" version
  local pause_root=$T/images/pause-root
  mkdir -p "$pause_root"
  cp "$bin/pause" "$pause_root/pause"
  "$(dirname "$0")/pack-image.sh" "$pause_root" localhost/pause:1 "$T/images/pause.tar" /pause >/dev/null
  import_image "$T/images/pause.tar"

  start etcd "$bin/etcd" --data-dir "$T/etcd" --unsafe-no-fsync \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380
  wait_for etcd 30 in_node curl -sf http://127.0.0.1:2379/health

  local p=$T/pki
  start kube-apiserver "$bin/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 \
    --advertise-address=$NODE_IP --bind-address=0.0.0.0 --secure-port=6443 --insecure-port=0 \
    --service-cluster-ip-range=$SERVICE_CIDR --allow-privileged=true \
    --client-ca-file="$p/ca.crt" --tls-cert-file="$p/apiserver.crt" --tls-private-key-file="$p/apiserver.key" \
    --kubelet-client-certificate="$p/apiserver-kubelet.crt" --kubelet-client-key="$p/apiserver-kubelet.key" \
    --kubelet-certificate-authority="$p/ca.crt" --kubelet-preferred-address-types=InternalIP \
    --service-account-key-file="$p/sa.pub" --service-account-signing-key-file="$p/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction
  wait_for kube-apiserver 120 "$bin/kubectl" --kubeconfig "$T/admin.kubeconfig" get --raw /readyz

  start kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig="$T/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$T/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$T/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --port=0 --leader-elect=false --use-service-account-credentials=true \
    --service-account-private-key-file="$p/sa.key" --root-ca-file="$p/ca.crt" \
    --cluster-signing-cert-file="$p/ca.crt" --cluster-signing-key-file="$p/ca.key"
  start kube-scheduler "$bin/kube-scheduler" --kubeconfig="$T/scheduler.kubeconfig" \
    --authentication-kubeconfig="$T/scheduler.kubeconfig" --authorization-kubeconfig="$T/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --port=0 --leader-elect=false
  start kube-proxy "$bin/kube-proxy" --config="$T/kube-proxy.yaml"
  start kubelet "$bin/kubelet" --config="$T/kubelet.yaml" --kubeconfig="$T/kubelet.kubeconfig" \
    --container-runtime=remote --container-runtime-endpoint="unix://$SOCK" \
    --root-dir="$T/kubelet" --node-ip=$NODE_IP --hostname-override=$NODE \
    --pod-infra-container-image=localhost/pause:1
  wait_for kubelet 120 node_ready "$bin"
  echo "$T/admin.kubeconfig"
}

node_ready() {
  "$1/kubectl" --kubeconfig "$T/admin.kubeconfig" get node $NODE \
    -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' | grep -qx True
}

stop() { # name: the state is thrown away, so nothing needs a graceful end
  local f=$T/run/$1.pid
  [[ -f $f ]] || return 0
  kill -9 "$(cat "$f")" 2>/dev/null || true
  rm -f "$f"
}

down() {
  [[ -d $T ]] || return 0
  # The kubelet first, so that it stops starting containers; then every container, by containerd.
  stop kubelet
  if [[ -S $SOCK ]] && ctr --address "$SOCK" version >/dev/null 2>&1; then
    local c=(ctr --address "$SOCK" -n k8s.io)
    for t in $("${c[@]}" tasks ls -q 2>/dev/null); do "${c[@]}" tasks kill -s SIGKILL "$t" 2>/dev/null || true; done
    for _ in $(seq 20); do
      [[ -z $("${c[@]}" tasks ls -q 2>/dev/null | head -1) ]] && break
      for t in $("${c[@]}" tasks ls -q 2>/dev/null); do "${c[@]}" tasks delete -f "$t" >/dev/null 2>&1 || true; done
      sleep 0.5
    done
    for k in $("${c[@]}" containers ls -q 2>/dev/null); do "${c[@]}" containers delete "$k" >/dev/null 2>&1 || true; done
  fi
  for name in kube-proxy kube-scheduler kube-controller-manager kube-apiserver etcd containerd; do stop $name; done
  # Shims outlive containerd; each runs with its containerd's address on its command line.
  pkill -9 -f "containerd-shim-runc-v2 .*-address $SOCK" 2>/dev/null || true
  for m in $(awk '{print $2}' /proc/mounts | grep -E "^($T/|/run/netns/cni-)" | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
  for n in $(ip netns list 2>/dev/null | awk '/^cni-/{print $1}'); do ip netns delete "$n" 2>/dev/null || true; done
  ip route del $POD_CIDR 2>/dev/null || true
  ip route del $SERVICE_CIDR 2>/dev/null || true
  ip link delete odigos-k8s 2>/dev/null || true
  ip netns delete $NETNS 2>/dev/null || true
  # Empty cgroups the kubelet made, deepest first.
  for h in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [[ -d $h ]] && find "$h" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  rm -rf /var/log/pods /var/log/containers
  rm -rf "$T"
}

cmd=${1:-}
case $cmd in
  up) up "${2:-${ODIGOS_K8S_NODE:?cluster.sh up needs BIN_DIR or \$ODIGOS_K8S_NODE}}" ;;
  down) down ;;
  import) import_image "${2:?usage: cluster.sh import IMAGE.tar}" ;;
  *) usage ;;
esac
