#!/usr/bin/env bash
# Assembles the odigos image without a Docker engine, with the same contents as the
# Dockerfile's: the binary (stripped), the shared libraries it links, CA roots, and a passwd
# file; entrypoint /usr/local/bin/odigos. Writes a docker-archive tarball that
# `ctr -n k8s.io images import` (and `docker load`) take, and prints its size.
#
# Usage: tests/k8s/build-image.sh OUT.tar [BINARY]
#   BINARY defaults to target/release/odigos; $IMAGE names the image (localhost/odigos:dev).
# Needs strip and ldd, and what pack-image.sh needs.
set -euo pipefail

out=${1:?usage: build-image.sh OUT.tar [BINARY]}
binary=${2:-target/release/odigos}
name=${IMAGE:-localhost/odigos:dev}
[[ -x $binary ]] || { echo "no binary at $binary (cargo build --release -p odigos)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{usr/local/bin,etc/ssl/certs,tmp}
chmod 1777 "$root/tmp"
strip -o "$root/usr/local/bin/odigos" "$binary"

# The libraries the binary links, at the paths the loader looks for them.
for lib in $(ldd "$binary" | grep -o '/[^ ]*'); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"

IMAGE_ENV=SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  "$(dirname "$0")/pack-image.sh" "$root" "$name" "$out" /usr/local/bin/odigos
