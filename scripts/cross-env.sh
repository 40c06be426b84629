#!/usr/bin/env bash
# Sourced with a Rust target triple: sets up Debian's cross toolchain for
# it (linker, C compiler for the bundled SQLite, strip) and CROSS_RUNNER,
# the qemu-user command that runs its binaries on this machine. Installs
# what is missing with apt when run as root.
#
#   source scripts/cross-env.sh aarch64-unknown-linux-gnu
#   "${CROSS_RUNNER[@]}" target/aarch64-unknown-linux-gnu/smoke/storegate --version
#
# Used by scripts/build-deb.sh and scripts/arm-smoke.sh; docs/packaging.md.

case "$1" in
    aarch64-unknown-linux-gnu)
        cross_gnu=aarch64-linux-gnu
        cross_qemu=qemu-aarch64
        cross_libc=libc6-dev-arm64-cross
        ;;
    armv7-unknown-linux-gnueabihf)
        cross_gnu=arm-linux-gnueabihf
        cross_qemu=qemu-arm
        cross_libc=libc6-dev-armhf-cross
        ;;
    *)
        echo "cross-env: unknown target '$1' (aarch64-unknown-linux-gnu or armv7-unknown-linux-gnueabihf)" >&2
        return 1 2>/dev/null || exit 1
        ;;
esac

cross_need=()
command -v "$cross_gnu-gcc" >/dev/null 2>&1 || cross_need+=("gcc-$cross_gnu" "$cross_libc")
command -v "$cross_qemu" >/dev/null 2>&1 || cross_need+=(qemu-user)
if [ ${#cross_need[@]} -gt 0 ]; then
    echo "cross-env: installing ${cross_need[*]}" >&2
    cross_sudo=""; [ "$(id -u)" -ne 0 ] && cross_sudo="sudo"
    $cross_sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $cross_sudo apt-get install -y -qq "${cross_need[@]}" >/dev/null
fi
rustup target list --installed 2>/dev/null | grep -qx "$1" || rustup target add "$1"

# CARGO_TARGET_<TRIPLE>_LINKER and CC_<triple> (cc-rs, for rusqlite's
# bundled SQLite); cargo-deb strips with <gnu>-strip when it finds it.
cross_upper=$(echo "$1" | tr 'a-z-' 'A-Z_')
cross_lower=$(echo "$1" | tr '-' '_')
export "CARGO_TARGET_${cross_upper}_LINKER=$cross_gnu-gcc"
export "CC_${cross_lower}=$cross_gnu-gcc"
export "AR_${cross_lower}=$cross_gnu-ar"
# The target's own libc and loader, as on the gateway.
CROSS_RUNNER=("$cross_qemu" -L "/usr/$cross_gnu")
