#!/usr/bin/env bash
# Installs Go 1.23 (Debian's golang-1.23-go from bookworm-backports) for the Go test server, as
# root, through a private apt configuration that adds the backports suite of the archive the
# machine's own sources name; the system's apt sources stay untouched.
set -euo pipefail
work=$(mktemp -d)
chmod 755 "$work"  # apt downloads as its own user
trap 'rm -rf "$work"' EXIT
mkdir -p "$work"/{lists/partial,parts}
uri=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -1)
if [[ -z $uri && -f /etc/apt/sources.list ]]; then
  uri=$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list)
fi
[[ -n $uri ]] || { echo "no Debian archive in the apt sources" >&2; exit 1; }
cp /etc/apt/sources.list.d/*.sources "$work/parts/" 2>/dev/null || true
[[ -f /etc/apt/sources.list ]] && cp /etc/apt/sources.list "$work/sources.list" || touch "$work/sources.list"
printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
  "$uri" > "$work/parts/backports.sources"
apt=(-o Dir::Etc::SourceList="$work/sources.list" -o Dir::Etc::SourceParts="$work/parts"
     -o Dir::State::Lists="$work/lists")
apt-get "${apt[@]}" update -qq
DEBIAN_FRONTEND=noninteractive apt-get "${apt[@]}" install -y -qq -t bookworm-backports golang-1.23-go >/dev/null
