# shellcheck shell=bash
# Shared helpers for scripts/lab/setup and scripts/lab/run (sourced, not executed).
#
# Layout of the lab cache (everything lives in <repo>/.lab, which is git-ignored):
#   .lab/lab.env              manifest + stamp of the 6.1 lab, written last by setup (KEY=VALUE lines)
#   .lab/lab-6.12.env         the same for the lab on the newer kernel (docs/kernels.md)
#   .lab/kernel/<kver>/       the extracted linux-image .deb (boot/, lib/modules/<kver>/, modules
#                             decompressed: busybox insmod and depmod take plain .ko only)
#   .lab/vmlinux-<kver>       uncompressed ELF kernel (PVH entry point; QEMU boots it directly)
#   .lab/l2-initrd-<kver>.cpio.gz  initramfs of the L2 VM on that kernel (mounts the host's / over 9p)
#   .lab/l3-initrd.cpio.gz    initramfs of the L3 test guest (busybox, virtio_net, iperf3, ethtool);
#                             L3 runs the 6.1 kernel in both labs
#   .lab/qemu-l2/             QEMU 10 from bookworm-backports, extracted: L2's emulator (scripts/lab/l2-qemu)
#   .lab/run/<id>/            per-run control directory of scripts/lab/run (removed afterwards)
#   .lab/cloud-hypervisor.env where the cached cloud-hypervisor binary is, or why there is none
#                             (scripts/lab/cloud-hypervisor; the binary lives outside the tree)
#   .lab/logs/                apt / build logs of the last setup

LAB_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
LAB_DIR=$LAB_REPO/.lab
# The kernels the lab can boot as L2 ("series"): 6.1 = Debian 12's own, 6.12 = the newest >= 6.12
# Debian's package sources reach (bookworm-backports on Debian 12). Default: LAB_KERNEL, else 6.1.
LAB_SERIES_ALL=(6.1 6.12)

# lab_check_series S: dies unless S is a series the lab knows.
lab_check_series() {
  case "$1" in 6.1|6.12) ;; *) lab_die "unknown lab kernel '$1' (known: ${LAB_SERIES_ALL[*]})" ;; esac
}

# lab_manifest S: the manifest file of series S.
lab_manifest() {
  if [ "$1" = 6.1 ]; then echo "$LAB_DIR/lab.env"; else echo "$LAB_DIR/lab-$1.env"; fi
}

# Files whose content defines what setup builds. A change to any of them
# invalidates the stamp (scripts/lab/run is deliberately not listed: it only
# consumes the build).
LAB_BUILD_INPUTS=(
  "$LAB_REPO/scripts/lab/setup"
  "$LAB_REPO/scripts/lab/lib.sh"
  "$LAB_REPO/scripts/lab/l2-init"
  "$LAB_REPO/scripts/lab/l2-qemu"
  "$LAB_REPO/lab/guest-initramfs/init"
  "$LAB_REPO/scripts/lab/cloud-hypervisor"
)

# lab_ch_kit: the cloud-hypervisor kit's folder ($VB_CH_KIT, else ../shared/cloud-hypervisor beside
# the repository; it may be absent: the CH tests then say so).
lab_ch_kit() { echo "${VB_CH_KIT:-$(dirname "$LAB_REPO")/shared/cloud-hypervisor}"; }

# lab_ch_kit_hash: hash of every file of the kit (names and contents), "none" without a kit; the
# key of the cached binary, and part of the lab's stamp so that a new kit runs setup again.
lab_ch_kit_hash() {
  local kit; kit=$(lab_ch_kit)
  [ -d "$kit" ] || { echo none; return 0; }
  (cd "$kit" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum) | sha256sum | cut -c1-16
}

lab_say() { printf 'lab: %s\n' "$*" >&2; }
lab_die() { printf 'lab: error: %s\n' "$*" >&2; exit 1; }

# Hash of the build inputs plus the versions of the host binaries copied into
# the initramfs images. Cheap (a few ms), so run can check it on every call.
lab_build_hash() {
  {
    cat "${LAB_BUILD_INPUTS[@]}"
    dpkg-query -W busybox-static iperf3 ethtool libc6 2>/dev/null
    echo "cloud-hypervisor kit $(lab_ch_kit_hash)"
  } | sha256sum | cut -c1-16
}

# lab_env_get KEY [SERIES]: value of KEY in the manifest of SERIES (default 6.1; empty if absent).
lab_env_get() {
  local m; m=$(lab_manifest "${2:-6.1}")
  [ -f "$m" ] || return 0
  sed -n "s/^$1=//p" "$m" | tail -n 1
}

# lab_is_built [SERIES]: true when .lab holds a complete build of SERIES (default 6.1) made by the
# current build scripts.
lab_is_built() {
  local s=${1:-6.1} f
  [ -f "$(lab_manifest "$s")" ] || return 1
  [ "$(lab_env_get LAB_BUILD_HASH "$s")" = "$(lab_build_hash)" ] || return 1
  for f in "$(lab_env_get LAB_VMLINUX "$s")" "$(lab_env_get LAB_L2_INITRD "$s")" \
    "$(lab_env_get LAB_L3_VMLINUX "$s")" "$(lab_env_get LAB_L3_INITRD "$s")" "$(lab_env_get LAB_L2_QEMU "$s")"; do
    [ -n "$f" ] && [ -f "$f" ] || return 1
  done
}
