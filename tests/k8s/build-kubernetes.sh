#!/usr/bin/env bash
# Builds real Kubernetes 1.20.2 components and fetches etcd 3.4.23 for the tests, from the
# Debian bookworm archive alone: Debian's `kubernetes` source package carries the whole
# upstream tree (Debian ships only kubectl from it), built with Debian's Go 1.19. Nothing is
# installed system-wide.
#
# Usage: tests/k8s/build-kubernetes.sh OUT_DIR [COMPONENT...]
#   COMPONENTs are commands of the tree (kube-apiserver, kubelet, ...); by default all a node
#   runs: kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy and
#   kubectl. OUT_DIR ends up holding them and etcd, and with kubelet the pod sandbox program
#   `pause` (the tree's build/pause, linked statically); all of them: ~445 MB, ~6 minutes on 2
#   cores. Nothing is done if OUT_DIR holds them already.
#   Scratch space (~4 GB) is taken in $K8S_BUILD_DIR, /dev/shm by default, and removed.
# Needs apt-get, dpkg-deb, make, patch, tar, xz, openssl, and with kubelet gcc and a static libc.
set -euo pipefail

out=${1:?usage: build-kubernetes.sh OUT_DIR [COMPONENT...]}
shift
components=("$@")
if [[ ${#components[@]} == 0 ]]; then
  components=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
fi
work=${K8S_BUILD_DIR:-/dev/shm/odigos-kubernetes-build}

wanted=("${components[@]}" etcd)
[[ " ${components[*]} " == *" kubelet "* ]] && wanted+=(pause)
missing=()
for c in "${wanted[@]}"; do
  [[ -x $out/$c ]] || missing+=("$c")
done
if [[ ${#missing[@]} == 0 ]]; then
  exit 0
fi
echo "building ${components[*]} 1.20.2 from Debian's source package into $out"
rm -rf "$work"
mkdir -p "$work"/{apt/lists/partial,apt/cache/archives/partial,apt/parts,debs,root,tmp,shim} "$out"
trap 'rm -rf "$work"' EXIT
cd "$work"

# 1. The source package, through a private apt configuration (the system's stays untouched)
#    that names the same archives as the machine's own sources, as deb-src.
touch apt/sources.list
if [[ -f /etc/apt/sources.list ]]; then
  sed -n 's/^deb /deb-src /p' /etc/apt/sources.list > apt/sources.list
fi
for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
  [[ -e $f ]] || continue
  case $f in
    *.sources) sed 's/^Types:.*/Types: deb-src/' "$f" > "apt/parts/${f##*/}" ;;
    *.list) sed -n 's/^deb /deb-src /p' "$f" > "apt/parts/${f##*/}" ;;
  esac 2>/dev/null || true
done
apt=(-o Dir::Etc::SourceList="$work/apt/sources.list" -o Dir::Etc::SourceParts="$work/apt/parts"
     -o Dir::State::Lists="$work/apt/lists" -o Dir::Cache="$work/apt/cache")
apt-get "${apt[@]}" update -qq
apt-get "${apt[@]}" source --download-only kubernetes 2>&1 | grep -v 'unsandboxed' || true
tar xzf kubernetes_*.orig.tar.gz
src=$(echo "$work"/kubernetes-1.20.*)
tar xJf kubernetes_*.debian.tar.xz -C "$src"
(cd "$src" && while read -r p; do patch -p1 --forward -s < "debian/patches/$p"; done < debian/patches/series)

# 2. Go 1.19, etcd, and newer reflect2 / json-iterator: the vendored reflect2 1.0.1 crashes
#    under Go 1.18 and later on the first custom resource written.
apt-get -qq update
(cd debs && apt-get download golang-1.19-go golang-1.19-src golang-github-modern-go-reflect2-dev \
   golang-github-json-iterator-go-dev etcd-server 2>&1 | grep -v 'unsandboxed' || true)
for deb in debs/*.deb; do dpkg-deb -x "$deb" root; done
goroot="$work/root/usr/lib/go-1.19"
vendor="$src/vendor/github.com"
gocode="$work/root/usr/share/gocode/src/github.com"
for p in modern-go/reflect2 json-iterator/go; do
  rm -f "$vendor/$p"/*.go "$vendor/$p"/*.s
  for f in "$gocode/$p"/*.go "$gocode/$p"/*.s; do
    if [[ -e $f && $f != *_test.go ]]; then cp "$f" "$vendor/$p/"; fi
  done
done
# The build places binaries with `rsync -pc SRC DST`; cp does the same here.
printf '#!/bin/sh\nshift; exec cp -p "$@"\n' > shim/rsync
chmod +x shim/rsync

# 3. The upstream make (it runs the code generators, openapi-gen among them).
(cd "$src" && env -u GOPATH -u GOFLAGS -u GO111MODULE -u GOCACHE \
   GOROOT="$goroot" PATH="$work/shim:$goroot/bin:$PATH" \
   TMPDIR="$work/tmp" GOTMPDIR="$work/tmp" GOPROXY=off \
   make WHAT="${components[*]/#/cmd/}")

for c in "${components[@]}"; do
  cp "$src/_output/local/bin/linux/amd64/$c" "$out/"
done
cp root/usr/bin/etcd "$out/"
if [[ " ${wanted[*]} " == *" pause "* ]]; then
  gcc -Os -static -DVERSION=1.20.2-odigos -o "$out/pause" "$src/build/pause/linux/pause.c"
  strip "$out/pause"
fi
"$out/${components[0]}" --version
