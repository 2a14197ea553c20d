#!/bin/sh
# Re-copies the vendored BPF headers from the Debian packages named below, so
# the build never depends on the host's multiarch include paths.
#
#   libbpf-dev      -> bpf/bpf_helpers.h bpf/bpf_helper_defs.h bpf/bpf_endian.h
#   linux-libc-dev  -> linux/bpf.h linux/bpf_common.h (UAPI)
#
# linux/types.h is wirken's own shim and is not touched. Needs apt-get (a
# Debian bookworm apt source) and dpkg-deb. After running it, run
# `go generate ./bpf/` and commit the headers and the regenerated objects
# together; update include/README.md when the versions change.
set -eu

LIBBPF_DEV_VERSION="${LIBBPF_DEV_VERSION:-1:1.1.2-0+deb12u1}"
LINUX_LIBC_DEV_VERSION="${LINUX_LIBC_DEV_VERSION:-6.1.192-2}"

here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT INT TERM

cd "$work"
# (As root, apt warns that it downloads unsandboxed: harmless.)
apt-get download \
	"libbpf-dev=${LIBBPF_DEV_VERSION}" \
	"linux-libc-dev=${LINUX_LIBC_DEV_VERSION}"
for deb in ./*.deb; do
	dpkg-deb -x "$deb" root
done

for f in bpf_helpers.h bpf_helper_defs.h bpf_endian.h; do
	cp "root/usr/include/bpf/$f" "$here/bpf/$f"
done
for f in bpf.h bpf_common.h; do
	cp "root/usr/include/linux/$f" "$here/linux/$f"
done
echo "updated headers in $here from libbpf-dev ${LIBBPF_DEV_VERSION}, linux-libc-dev ${LINUX_LIBC_DEV_VERSION}"
