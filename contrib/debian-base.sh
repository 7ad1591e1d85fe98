#!/bin/sh
# Build a Debian base image (debootstrap minbase + python3) as an oci-archive, for building the
# Containerfile where no container registry is reachable: `buildah bud --build-arg BASE=oci-archive:OUT`.
# It stands in for docker.io/library/debian:bookworm-slim (the Containerfile's default base), trimmed the
# same way (no docs, man pages, locales, apt lists or .debs), with python3 already in, which the
# Containerfile would otherwise install.
#   usage: contrib/debian-base.sh OUT.tar     (root; debootstrap and umoci)
#   env:   SUITE (bookworm), MIRROR (the first Debian URI in /etc/apt/sources.list*, else deb.debian.org),
#          PACKAGES (python3; empty: minbase alone, like debian:bookworm-slim, for the Containerfile to add python3)
set -eu
out=${1:?usage: $0 OUT.tar}
suite=${SUITE:-bookworm}
if [ -z "${MIRROR:-}" ]; then
	# deb822 "URIs:" lines or one-line "deb URI suite" entries; the security archive has no $suite.
	MIRROR=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
		awk '$1 == "URIs:" || $1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/ && $i !~ /security/) { print $i; exit } }')
	MIRROR=${MIRROR:-http://deb.debian.org/debian}
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/ocisquash-base.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
packages=${PACKAGES-python3}
debootstrap --variant=minbase ${packages:+--include="$packages"} "$suite" "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1 ||
	{ tail -20 "$work/debootstrap.log" >&2; exit 1; }
# What the slim images leave out, and say so to dpkg so later installs leave it out too.
cat >"$root/etc/dpkg/dpkg.cfg.d/slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
CFG
find "$root/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$root/usr/share/man/"* "$root/usr/share/info/"* "$root/usr/share/locale/"* \
	"$root/var/lib/apt/lists/"* "$root/var/cache/apt/"*.bin "$root/var/log/"*.log
find "$root/var/cache/apt/archives" -name '*.deb' -delete
# /dev, /proc and /sys are the runtime's to fill: the layer holds them empty.
tar -C "$root" --numeric-owner --xattrs --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
	-cf "$work/layer.tar" .
layout=$work/layout
umoci init --layout "$layout"
umoci new --image "$layout:base"
umoci raw add-layer --image "$layout:base" "$work/layer.tar"
umoci config --image "$layout:base" --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	--config.cmd bash --os linux --architecture "$(dpkg --print-architecture)"
umoci gc --layout "$layout"
mkdir -p "$(dirname "$out")"
tar -C "$layout" -cf "$out.part" . && mv "$out.part" "$out"
