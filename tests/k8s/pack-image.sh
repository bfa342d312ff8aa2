#!/usr/bin/env bash
# Packs a root filesystem into a one-layer docker-archive image, reproducibly (sorted, owned by
# root, dated at the epoch), for `ctr -n k8s.io images import` and `docker load`: there is no
# registry in the tests. Prints the image's size.
#
# Usage: tests/k8s/pack-image.sh ROOTFS NAME OUT.tar ENTRYPOINT [ARG...]
#   Extra environment for the image comes from $IMAGE_ENV (space-separated KEY=VALUE).
# Needs tar, sha256sum and gzip.
set -euo pipefail

root=${1:?usage: pack-image.sh ROOTFS NAME OUT.tar ENTRYPOINT [ARG...]}
name=${2:?usage: pack-image.sh ROOTFS NAME OUT.tar ENTRYPOINT [ARG...]}
out=${3:?usage: pack-image.sh ROOTFS NAME OUT.tar ENTRYPOINT [ARG...]}
shift 3
[[ $# -gt 0 ]] || { echo "pack-image.sh: no entrypoint given" >&2; exit 1; }

json_list() { # strings -> ["a","b"]; the names here hold no quotes or backslashes
  local sep='' s='['
  for a in "$@"; do s+="$sep\"$a\""; sep=','; done
  printf '%s]' "$s"
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar --numeric-owner --owner=0 --group=0 --sort=name --mtime=@0 -C "$root" -cf "$work/layer.tar" .
diff_id=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
# shellcheck disable=SC2086
env=$(json_list PATH=/usr/local/bin:/usr/bin:/bin ${IMAGE_ENV:-})
cat >"$work/config.json" <<JSON
{"architecture":"amd64","os":"linux","config":{"Env":$env,"Entrypoint":$(json_list "$@"),"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:$diff_id"]},"history":[{"created_by":"tests/k8s/pack-image.sh"}]}
JSON
config=$(sha256sum "$work/config.json" | cut -d' ' -f1)
mv "$work/config.json" "$work/$config.json"
printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["layer.tar"]}]\n' "$config" "$name" >"$work/manifest.json"
mkdir -p "$(dirname "$out")"
tar -C "$work" -cf "$out" manifest.json "$config.json" layer.tar

size=$(stat -c %s "$work/layer.tar")
compressed=$(gzip -c "$work/layer.tar" | wc -c)
echo "image $name: $((size / 1048576)) MiB, $((compressed / 1048576)) MiB compressed, in $out"
