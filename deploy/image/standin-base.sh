#!/usr/bin/env bash
# Build a local stand-in for a Debian-based `python:X.Y.Z-slim-<suite>` base image from Debian
# packages, and tag it with the base's own name, so that the Dockerfile builds unchanged where no
# container registry can be reached.
#
#   deploy/image/standin-base.sh python:3.11.11-slim-bookworm
#
# The stand-in is a minbase Debian of the same suite with Debian's python3 (3.11.2 on bookworm,
# not 3.11.11), python3-venv, ca-certificates, netbase and tzdata: what the slim image brings
# that the Dockerfile uses (`python`, `python -m venv`, pip in the venv, groupadd/useradd), with
# the same PATH, LANG and CMD. Documentation, manual pages and locales are left out, as in the
# slim image. Its labels say it is a stand-in, and of what.
#
# Needs (Debian): mmdebstrap, buildah. Run as root (or under `buildah unshare`). Packages come from
# deb.debian.org (with the suite's updates and security) or DEBIAN_MIRROR (a mirror URL, a
# one-line `deb ...` entry, or a sources file). The host's apt network options (proxy, CA,
# Check-Valid-Until) are passed to apt for the bootstrap and removed from the result.
set -euo pipefail

base=${1:?usage: $0 BASE_IMAGE (e.g. python:3.11.11-slim-bookworm)}
tag=${base##*:}
suite=${tag##*-}
case "$base" in
  python:*-slim-* | */python:*-slim-*) ;;
  *) echo "standin-base: only python:<version>-slim-<debian suite> bases can be stood in for, not $base" >&2; exit 2 ;;
esac
case "$base" in
  */*) name=$base ;;
  *) name=docker.io/library/$base ;;
esac
mirror=${DEBIAN_MIRROR:-}

work=$(mktemp -d)
ctr=
cleanup() {
  [ -z "$ctr" ] || buildah rm "$ctr" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

aptopts=()
while IFS= read -r line; do
  aptopts+=("--aptopt=$line")
done < <(apt-config dump 2>/dev/null \
  | grep -E '^Acquire::(Check-Valid-Until|Check-Date|https?::(Proxy|CaInfo|Verify-Peer|Verify-Host)|https?::Proxy::[^ ]+) ' \
  || true)

start=$(date +%s)
echo "standin-base: bootstrapping Debian $suite with python3 for $name" >&2
# The hooks are run by mmdebstrap with the chroot as "$1": single quotes on purpose.
# The host's apt options (maybe a proxy with credentials) are dropped from the result; the dpkg
# path excludes stay, as in the slim images, so that later installs stay slim too.
# shellcheck disable=SC2016
mmdebstrap --variant=minbase --quiet \
  --include=python3,python3-venv,python-is-python3,ca-certificates,netbase,tzdata \
  "${aptopts[@]}" \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --customize-hook='rm -f "$1"/etc/apt/apt.conf.d/99mmdebstrap' \
  --customize-hook='ln -sf /usr/bin/python3 "$1"/usr/local/bin/python3 && ln -sf python3 "$1"/usr/local/bin/python' \
  "$suite" - ${mirror:+"$mirror"} </dev/null \
  | mmtarfilter --path-exclude='/dev/*' > "$work/rootfs.tar"

python_version=$(tar -xOf "$work/rootfs.tar" ./var/lib/dpkg/status \
  | awk '/^Package: python3$/ {p = 1} p && /^Version:/ && !v {v = $2} END {print v}')

ctr=$(buildah from scratch)
buildah add --quiet "$ctr" "$work/rootfs.tar" / >/dev/null
buildah config \
  --env PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin \
  --env LANG=C.UTF-8 \
  --cmd '["python3"]' \
  --label org.opencontainers.image.title="stand-in for $base" \
  --label org.opencontainers.image.description="Debian $suite minbase with Debian's python3 $python_version, built from Debian packages by deploy/image/standin-base.sh because $base could not be pulled" \
  --label io.autogen-service.standin-for="$base" \
  "$ctr"
buildah commit --quiet --rm "$ctr" "$name" >/dev/null
ctr=
echo "standin-base: tagged $name (Debian $suite, python3 $python_version) in $(($(date +%s) - start)) s" >&2
