# shellcheck shell=bash
# Shared helpers for scripts/lab/setup and scripts/lab/run (sourced, not executed).
#
# Layout of the lab cache (everything lives in <repo>/.lab, which is git-ignored):
#   .lab/lab.env              manifest + stamp written last by setup (KEY=VALUE lines)
#   .lab/kernel/<kver>/       the extracted linux-image .deb (boot/, lib/modules/<kver>/)
#   .lab/vmlinux-<kver>       uncompressed ELF kernel (PVH entry point; QEMU boots it directly)
#   .lab/l2-initrd.cpio.gz    initramfs of the L2 VM (mounts the host's / over 9p)
#   .lab/l3-initrd.cpio.gz    initramfs of the L3 test guest (busybox, virtio_net, iperf3, ethtool)
#   .lab/qemu-l2/             QEMU 10 from bookworm-backports, extracted: L2's emulator (scripts/lab/l2-qemu)
#   .lab/run/<id>/            per-run control directory of scripts/lab/run (removed afterwards)
#   .lab/logs/                apt / build logs of the last setup

LAB_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
LAB_DIR=$LAB_REPO/.lab
LAB_ENV=$LAB_DIR/lab.env

# Files whose content defines what setup builds. A change to any of them
# invalidates the stamp (scripts/lab/run is deliberately not listed: it only
# consumes the build).
LAB_BUILD_INPUTS=(
  "$LAB_REPO/scripts/lab/setup"
  "$LAB_REPO/scripts/lab/lib.sh"
  "$LAB_REPO/scripts/lab/l2-init"
  "$LAB_REPO/scripts/lab/l2-qemu"
  "$LAB_REPO/lab/guest-initramfs/init"
)

lab_say() { printf 'lab: %s\n' "$*" >&2; }
lab_die() { printf 'lab: error: %s\n' "$*" >&2; exit 1; }

# Hash of the build inputs plus the versions of the host binaries copied into
# the initramfs images. Cheap (a few ms), so run can check it on every call.
lab_build_hash() {
  {
    cat "${LAB_BUILD_INPUTS[@]}"
    dpkg-query -W busybox-static iperf3 ethtool libc6 2>/dev/null
  } | sha256sum | cut -c1-16
}

# lab_env_get KEY: value of KEY in .lab/lab.env (empty if absent).
lab_env_get() {
  [ -f "$LAB_ENV" ] || return 0
  sed -n "s/^$1=//p" "$LAB_ENV" | tail -n 1
}

# True when .lab holds a complete build made by the current build scripts.
lab_is_built() {
  [ -f "$LAB_ENV" ] || return 1
  [ "$(lab_env_get LAB_BUILD_HASH)" = "$(lab_build_hash)" ] || return 1
  local f
  for f in "$(lab_env_get LAB_VMLINUX)" "$(lab_env_get LAB_L2_INITRD)" "$(lab_env_get LAB_L3_INITRD)" \
           "$(lab_env_get LAB_L2_QEMU)"; do
    [ -n "$f" ] && [ -f "$f" ] || return 1
  done
}
