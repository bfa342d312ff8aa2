#!/usr/bin/env bash
# Assembles the odigos image without a Docker engine, with the same contents as the
# Dockerfile's: the binary (stripped), the shared libraries it links, CA roots, and a passwd
# file; entrypoint /usr/local/bin/odigos. Writes a docker-archive tarball that
# `ctr -n k8s.io images import` (and `docker load`) take, and prints its size.
#
# Usage: tests/k8s/build-image.sh OUT.tar [BINARY]
#   BINARY defaults to target/release/odigos; $IMAGE names the image (localhost/odigos:dev).
# Needs tar, strip, ldd, sha256sum and gzip.
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

# One layer, reproducible: sorted, owned by root, dated at the epoch.
tar --numeric-owner --owner=0 --group=0 --sort=name --mtime=@0 -C "$root" -cf "$work/layer.tar" .
diff_id=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
cat >"$work/config.json" <<JSON
{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/local/bin:/usr/bin:/bin","SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"],"Entrypoint":["/usr/local/bin/odigos"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:$diff_id"]},"history":[{"created_by":"tests/k8s/build-image.sh"}]}
JSON
config=$(sha256sum "$work/config.json" | cut -d' ' -f1)
mv "$work/config.json" "$work/$config.json"
printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["layer.tar"]}]\n' "$config" "$name" >"$work/manifest.json"
mkdir -p "$(dirname "$out")"
tar -C "$work" -cf "$out" manifest.json "$config.json" layer.tar

size=$(stat -c %s "$work/layer.tar")
compressed=$(gzip -c "$work/layer.tar" | wc -c)
echo "image $name: $((size / 1048576)) MiB, $((compressed / 1048576)) MiB compressed, in $out"
