#!/usr/bin/env bash
# Assembles the test application's image from this machine's Python (Debian's python3): the
# interpreter, the shared libraries it links and its standard library (without tests, GUI and
# bundled pip), running `python3 -m http.server 8080`. Writes a docker-archive tarball for
# `ctr -n k8s.io images import`.
#
# Usage: tests/k8s/build-app-image.sh OUT.tar
#   $IMAGE names the image (localhost/python-app:test). Needs python3, ldd and what
#   pack-image.sh needs.
set -euo pipefail

out=${1:?usage: build-app-image.sh OUT.tar}
name=${IMAGE:-localhost/python-app:test}
python=$(readlink -f /usr/bin/python3)
stdlib=$("$python" -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root/usr/bin" "$root/tmp" "$root$(dirname "$stdlib")"
chmod 1777 "$root/tmp"
cp "$python" "$root/usr/bin/python3"
for lib in $(ldd "$python" | grep -o '/[^ ]*'); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
tar -C "$(dirname "$stdlib")" \
  --exclude=__pycache__ --exclude=test --exclude=idlelib --exclude=tkinter \
  --exclude=ensurepip --exclude="config-*" --exclude=lib2to3 --exclude=site-packages --exclude=dist-packages \
  -cf - "$(basename "$stdlib")" | tar -C "$root$(dirname "$stdlib")" -xf -

IMAGE_ENV=PYTHONDONTWRITEBYTECODE=1 \
  "$(dirname "$0")/pack-image.sh" "$root" "$name" "$out" /usr/bin/python3 -m http.server 8080
