#!/usr/bin/env bash
# Build the vnflab student VM image from Debian 12 packages only (see vm/README.md).
#
#   sudo vm/build.sh OUT [--arch amd64|arm64] [--format qcow2,ova] [--password PW]
#                        [--ssh-key FILE] [--autologin] [--disk-size 20G] [--keep-raw]
#   (also: sudo vnflab vm build OUT ...)
#
# How: mmdebstrap makes the root file system in a directory (packages from the Debian mirror
# this host's apt already uses; nothing else is downloaded except what scripts/install.sh
# fetches for the venv), scripts/install.sh --hugepages 256 --jupyter runs inside it (the
# project's one installer), vm/image-setup.sh adds the student user, SSH, the console, the
# labs and the login message. Then, with no loop device and no mount: mkfs.ext4 -d writes
# that directory into the root partition of a GPT disk file, mkfs.vfat + mtools make the EFI
# system partition, and GRUB goes in twice (BIOS: boot.img in the MBR + core.img in a BIOS
# boot partition; UEFI: \EFI\BOOT\BOOTX64.EFI or BOOTAA64.EFI), so the same disk boots in
# VirtualBox's default BIOS mode, under UEFI (virt-manager, UTM) and in plain QEMU.
# Outputs in OUT: vnflab-ARCH.qcow2, vnflab-ARCH.ova, SHA256SUMS, build-ARCH.log.
set -euo pipefail

usage() {
    sed -n '4,5p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
OUT=""
ARCH=$(dpkg --print-architecture 2>/dev/null || echo amd64)
FORMATS="qcow2,ova"
PASSWORD="vnflab"
SSH_KEY=""
AUTOLOGIN=0
DISK_SIZE="20G"
KEEP_RAW=0
while [ $# -gt 0 ]; do
    case "$1" in
        --arch) ARCH=${2:?}; shift 2 ;;
        --format) FORMATS=${2:?}; shift 2 ;;
        --password) PASSWORD=${2:?}; shift 2 ;;
        --ssh-key) SSH_KEY=${2:?}; shift 2 ;;
        --autologin) AUTOLOGIN=1; shift ;;
        --disk-size) DISK_SIZE=${2:?}; shift 2 ;;
        --keep-raw) KEEP_RAW=1; shift ;;
        -h|--help) usage ;;
        -*) echo "build.sh: unknown option $1" >&2; usage ;;
        *) [ -z "$OUT" ] || usage; OUT=$1; shift ;;
    esac
done
[ -n "$OUT" ] || usage
case "$ARCH" in amd64|arm64) ;; *) echo "build.sh: --arch amd64 or arm64" >&2; exit 2 ;; esac
for f in ${FORMATS//,/ }; do
    case "$f" in qcow2|ova|raw) ;; *) echo "build.sh: --format takes qcow2,ova (and raw)" >&2; exit 2 ;; esac
done
if [ -n "$SSH_KEY" ] && [ ! -r "$SSH_KEY" ]; then echo "build.sh: cannot read $SSH_KEY" >&2; exit 2; fi
if [ "$(id -u)" != 0 ]; then echo "build.sh: run as root (mmdebstrap, chroot): sudo $0 ..." >&2; exit 1; fi
git -C "$REPO" rev-parse HEAD >/dev/null 2>&1 || { echo "build.sh: $REPO is not a git checkout" >&2; exit 1; }

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK="$OUT/work-$ARCH"
LOG="$OUT/build-$ARCH.log"
T0=$(date +%s)
log() { echo "build.sh [$(( $(date +%s) - T0 ))s] $*" | tee -a "$LOG" >&2; }
: > "$LOG"

# ---- host tools (a fresh Debian host has none of them) -------------------------------------
need=(mmdebstrap:mmdebstrap qemu-img:qemu-utils grub-mkimage:grub-common mkfs.vfat:dosfstools
      mcopy:mtools sfdisk:fdisk mkfs.ext4:e2fsprogs git:git)
# (GRUB's boot code and modules come from the image's own grub-*-bin packages: the host needs
# only grub-mkimage, whatever the target architecture)
HOST_ARCH=$(dpkg --print-architecture)
if [ "$ARCH" != "$HOST_ARCH" ]; then
    need+=(/usr/libexec/qemu-binfmt/aarch64-binfmt-P:qemu-user-static update-binfmts:binfmt-support)
fi
missing=()
for pair in "${need[@]}"; do
    tool=${pair%%:*} pkg=${pair#*:}
    if [[ $tool == /* ]]; then [ -e "$tool" ] || missing+=("$pkg")
    else command -v "$tool" >/dev/null || missing+=("$pkg"); fi
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing host tools: ${missing[*]}"
    apt-get update -q >>"$LOG" 2>&1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$LOG" 2>&1
fi

# ---- foreign architecture: binfmt_misc + qemu-user (undone at exit if we did it) -----------
BINFMT_MOUNTED=0 BINFMT_ENABLED=0
cleanup() {
    local rc=$?
    if [ "$BINFMT_ENABLED" = 1 ]; then update-binfmts --disable qemu-aarch64 >/dev/null 2>&1 || true; fi
    if [ "$BINFMT_MOUNTED" = 1 ]; then umount /proc/sys/fs/binfmt_misc 2>/dev/null || true; fi
    if [ "$rc" != 0 ]; then
        echo "build.sh: FAILED (exit $rc); the log is $LOG; scratch kept in $WORK" >&2
    fi
}
trap cleanup EXIT
if [ "$ARCH" != "$HOST_ARCH" ]; then
    if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc && BINFMT_MOUNTED=1
    fi
    if ! grep -qs enabled /proc/sys/fs/binfmt_misc/qemu-aarch64; then
        update-binfmts --enable qemu-aarch64 && BINFMT_ENABLED=1
    fi
    log "foreign architecture $ARCH through qemu-user (binfmt_misc)"
fi

# ---- the Debian mirror this host's apt uses (never a name written in this repository) -------
targets=$(apt-get indextargets --format '$(SITE) $(RELEASE) $(ORIGIN)' 'Identifier: Packages' 2>/dev/null | sort -u || true)
MIRROR=${VNFLAB_MIRROR:-$(awk '$2 == "bookworm" {print $1; exit}' <<<"$targets")}
[ -n "$MIRROR" ] || MIRROR=$(awk '$3 == "Debian" && $2 !~ /security/ {print $1; exit}' <<<"$targets")
SECURITY=${VNFLAB_SECURITY_MIRROR:-$(awk '$2 == "bookworm-security" {print $1; exit}' <<<"$targets")}
[ -n "$SECURITY" ] || SECURITY=$(awk '$3 == "Debian" && $2 ~ /security/ {print $1; exit}' <<<"$targets")
if [ -z "$MIRROR" ]; then
    echo "build.sh: no Debian mirror in this host's apt sources; set VNFLAB_MIRROR=URL" >&2
    exit 1
fi
SOURCES=("deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main")
[ -n "$SECURITY" ] && SOURCES+=("deb $SECURITY bookworm-security main")
log "mirror: $MIRROR (security: ${SECURITY:-none})"

# ---- the image's packages ------------------------------------------------------------------
PKGS=(systemd-sysv systemd-resolved systemd-timesyncd udev dbus libpam-systemd kmod initramfs-tools
      openssh-server sudo ca-certificates e2fsprogs iproute2 iputils-ping netbase less nano
      bash-completion procps tzdata git python3)
if [ "$ARCH" = amd64 ]; then
    PKGS+=(linux-image-amd64 grub-pc-bin grub-efi-amd64-bin)
    CONSOLE=ttyS0 EFI_TARGET=x86_64-efi EFI_NAME=BOOTX64.EFI
else
    PKGS+=(linux-image-arm64 grub-efi-arm64-bin)
    CONSOLE=ttyAMA0 EFI_TARGET=arm64-efi EFI_NAME=BOOTAA64.EFI
fi
APTOPTS=()
# a host that reads a dated mirror snapshot needs this to read it at all; the image does not keep it
[ "$(apt-config dump Acquire::Check-Valid-Until 2>/dev/null | awk '{print $2}')" = '"false";' ] &&
    APTOPTS+=(--aptopt='Acquire::Check-Valid-Until "false"')

# ---- inputs for vm/image-setup.sh (copied into the chroot's /tmp/vnflab-build) ---------------
ROOT="$WORK/root"
# VNFLAB_REUSE_ROOT=1 (developers): keep a root file system that a failed run already finished
REUSE=0
if [ "${VNFLAB_REUSE_ROOT:-0}" = 1 ] && [ -s "$ROOT/etc/vnflab-image" ] && [ -s "$WORK/root-uuid" ]; then
    REUSE=1
else
    rm -rf "$WORK"
fi
mkdir -p "$WORK/in"
if [ "$REUSE" = 1 ]; then ROOT_UUID=$(cat "$WORK/root-uuid"); else
    ROOT_UUID=$(cat /proc/sys/kernel/random/uuid); echo "$ROOT_UUID" > "$WORK/root-uuid"; fi
COMMIT=$(git -C "$REPO" rev-parse --short HEAD)
git -C "$REPO" archive --format=tar HEAD > "$WORK/vnflab.tar"
if ! git -C "$REPO" diff --quiet HEAD 2>/dev/null; then
    log "note: the checkout has uncommitted changes; the image gets HEAD ($COMMIT) only"
fi
printf '%s\n' "$PASSWORD" > "$WORK/in/password"
chmod 600 "$WORK/in/password"
[ -n "$SSH_KEY" ] && cp "$SSH_KEY" "$WORK/in/authorized_keys"
# The host's CA bundle, for pip inside the chroot during the build only (a network whose HTTPS
# goes through a proxy needs its CA); image-setup.sh deletes it, the image keeps Debian's.
[ -r /etc/ssl/certs/ca-certificates.crt ] && cp /etc/ssl/certs/ca-certificates.crt "$WORK/in/host-ca.crt"
cp "$HERE/image-setup.sh" "$WORK/in/"
cat > "$WORK/in/config" <<EOF
ARCH=$ARCH
CONSOLE=$CONSOLE
ROOT_UUID=$ROOT_UUID
AUTOLOGIN=$AUTOLOGIN
COMMIT=$COMMIT
BUILD_DATE=$(date -u +%Y-%m-%dT%H:%MZ)
SSH_KEY_ONLY=$([ -n "$SSH_KEY" ] && echo 1 || echo 0)
EOF
# pass the host's proxy and pip index settings through, if it has any
for v in http_proxy https_proxy no_proxy PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_DEFAULT_TIMEOUT; do
    [ -n "${!v:-}" ] && printf '%s=%q\n' "$v" "${!v}" >> "$WORK/in/config"
done

# ---- 1. the root file system -----------------------------------------------------------------
# fstab and FSTYPE come before the kernel, so that its initramfs gets fsck for the root file
# system (initramfs-tools would probe the root device for its type, and there is none here).
# systemd-resolved's package points /etc/resolv.conf at its stub, which does not run in a chroot:
# the host's resolv.conf serves the build, and the stub link comes back at the end.
if [ "$REUSE" = 1 ]; then
    log "reusing $ROOT (VNFLAB_REUSE_ROOT=1)"
else
log "mmdebstrap $ARCH: ${#PKGS[@]} packages + scripts/install.sh --hugepages 256 --jupyter (long)"
mmdebstrap --mode=root --variant=apt --arch="$ARCH" --components=main \
    --include="$(IFS=,; echo "${PKGS[*]}")" "${APTOPTS[@]}" \
    --essential-hook="echo 'UUID=$ROOT_UUID / ext4 errors=remount-ro 0 1' > \"\$1/etc/fstab\"" \
    --essential-hook='mkdir -p "$1/etc/initramfs-tools/conf.d"; echo FSTYPE=ext4 > "$1/etc/initramfs-tools/conf.d/vnflab-root-fs"' \
    --customize-hook='mkdir -p "$1/opt/vnflab" "$1/tmp/vnflab-build"' \
    --customize-hook="tar-in $WORK/vnflab.tar /opt/vnflab" \
    --customize-hook="sync-in $WORK/in /tmp/vnflab-build" \
    --customize-hook='rm -f "$1/etc/resolv.conf"; cp -L /etc/resolv.conf "$1/etc/resolv.conf"' \
    --customize-hook='chroot "$1" /usr/bin/env -i TERM=dumb /bin/bash /tmp/vnflab-build/image-setup.sh' \
    --customize-hook='rm -rf "$1/tmp/vnflab-build"' \
    --customize-hook='rm -f "$1/etc/resolv.conf"; ln -s ../run/systemd/resolve/stub-resolv.conf "$1/etc/resolv.conf"' \
    --customize-hook='echo vnflab > "$1/etc/hostname"; rm -f "$1/etc/apt/apt.conf.d/99mmdebstrap"' \
    bookworm "$ROOT" "${SOURCES[@]}" >>"$LOG" 2>&1
fi
rm -f "$WORK/vnflab.tar" "$WORK/in/password"
log "root file system: $(du -sh "$ROOT" | cut -f1)"

# ---- 2. boot files, inside the root file system ----------------------------------------------
# Kernel and initrd through Debian's /vmlinuz and /initrd.img links, which every kernel upgrade
# in the image moves, so the hand-written grub.cfg stays right without grub-install there.
KPATH=/vmlinuz IPATH=/initrd.img
[ -e "$ROOT/vmlinuz" ] || { KPATH=/boot/vmlinuz IPATH=/boot/initrd.img; }
[ -e "$ROOT$KPATH" ] || { echo "build.sh: no kernel in the image" >&2; exit 1; }
mkdir -p "$ROOT/boot/grub"
CMDLINE="root=UUID=$ROOT_UUID ro console=tty0 console=$CONSOLE,115200"
{
    echo "# vnflab image: written by vm/build.sh (no grub-mkconfig; the kernel links keep it valid)"
    echo "set timeout=2"
    if [ "$ARCH" = amd64 ]; then
        echo "serial --unit=0 --speed=115200"
        echo "terminal_input console serial"
        echo "terminal_output console serial"
    fi
    echo "menuentry 'vnflab (Debian 12, $ARCH)' {"
    echo "    linux $KPATH $CMDLINE"
    echo "    initrd $IPATH"
    echo "}"
    echo "menuentry 'vnflab (Debian 12, $ARCH), recovery' {"
    echo "    linux $KPATH $CMDLINE single"
    echo "    initrd $IPATH"
    echo "}"
} > "$ROOT/boot/grub/grub.cfg"
cat > "$WORK/early.cfg" <<EOF
search --no-floppy --fs-uuid --set=root $ROOT_UUID
set prefix=(\$root)/boot/grub
EOF
MODS="part_gpt part_msdos ext2 search search_fs_uuid normal linux configfile echo test gzio"
PLATFORMS=("$EFI_TARGET")
[ "$ARCH" = amd64 ] && PLATFORMS+=(i386-pc)
for p in "${PLATFORMS[@]}"; do
    cp -a "$ROOT/usr/lib/grub/$p" "$ROOT/boot/grub/"       # modules GRUB loads at boot
done
if [ "$ARCH" = amd64 ]; then
    grub-mkimage -d "$ROOT/usr/lib/grub/i386-pc" -O i386-pc -p /boot/grub -o "$WORK/core.img" -c "$WORK/early.cfg" \
        $MODS biosdisk serial terminal
    grub-mkimage -d "$ROOT/usr/lib/grub/x86_64-efi" -O x86_64-efi -p /boot/grub -o "$WORK/$EFI_NAME" -c "$WORK/early.cfg" \
        $MODS serial terminal efi_gop efi_uga
else
    grub-mkimage -d "$ROOT/usr/lib/grub/arm64-efi" -O arm64-efi -p /boot/grub -o "$WORK/$EFI_NAME" -c "$WORK/early.cfg" \
        $MODS efi_gop
fi

# ---- 3. the disk: GPT, [BIOS boot], EFI system partition, root --------------------------------
MiB=$((1024 * 1024))
DISK_BYTES=$(numfmt --from=iec "${DISK_SIZE%B}")
DISK_BYTES=$(( DISK_BYTES / MiB * MiB ))
ESP_MIB=64
if [ "$ARCH" = amd64 ]; then BIOS_START=1 ESP_START=2; else BIOS_START=0 ESP_START=1; fi
ROOT_START=$(( ESP_START + ESP_MIB ))                      # MiB
ROOT_MIB=$(( DISK_BYTES / MiB - ROOT_START - 1 ))          # 1 MiB at the end for the backup GPT
USED_MIB=$(( $(du -sm "$ROOT" | cut -f1) ))
if [ $(( USED_MIB * 5 / 4 + 512 )) -gt "$ROOT_MIB" ]; then
    echo "build.sh: --disk-size $DISK_SIZE is too small for ${USED_MIB} MiB of files" >&2; exit 1
fi
RAW="$WORK/disk.raw"
rm -f "$RAW"
truncate -s "$DISK_BYTES" "$RAW"
{
    echo "label: gpt"
    [ "$BIOS_START" != 0 ] && echo "start=${BIOS_START}MiB, size=1MiB, type=21686148-6449-6E6F-744E-656564454649, name=bios-boot"
    echo "start=${ESP_START}MiB, size=${ESP_MIB}MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=esp"
    echo "start=${ROOT_START}MiB, size=${ROOT_MIB}MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=vnflab-root"
} | sfdisk -q "$RAW" >>"$LOG" 2>&1

log "mkfs.ext4 -d: ${USED_MIB} MiB of files into a ${ROOT_MIB} MiB partition"
mkfs.ext4 -q -F -L vnflab-root -U "$ROOT_UUID" -E "offset=$(( ROOT_START * MiB ))" \
    -d "$ROOT" "$RAW" "$(( ROOT_MIB * 1024 ))k" >>"$LOG" 2>&1

ESP="$WORK/esp.img"
rm -f "$ESP"
mkfs.vfat -C -F 32 -n EFI "$ESP" $(( ESP_MIB * 1024 )) >>"$LOG" 2>&1
mmd -i "$ESP" ::/EFI ::/EFI/BOOT
mcopy -i "$ESP" "$WORK/$EFI_NAME" "::/EFI/BOOT/$EFI_NAME"
dd if="$ESP" of="$RAW" bs=1M seek="$ESP_START" conv=notrunc status=none
rm -f "$ESP"

if [ "$ARCH" = amd64 ]; then
    # BIOS: what grub-bios-setup would do (it needs a block device; this is a file): boot.img in
    # the MBR (keeping the protective partition table), core.img in the BIOS boot partition,
    # and the two sector addresses patched in: boot.img's kernel sector (offset 0x5c) and the
    # block list at the end of core.img's first sector (start, count, load segment 0x820).
    le() { local v=$1 n=$2 s=""; for ((i = 0; i < n; i++)); do s+=$(printf '\\x%02x' $(( (v >> (8 * i)) & 255 ))); done; printf "$s"; }
    CORE_LBA=$(( BIOS_START * MiB / 512 ))
    CORE_SECTORS=$(( ($(stat -c %s "$WORK/core.img") + 511) / 512 ))
    [ "$CORE_SECTORS" -le 2048 ] || { echo "build.sh: core.img is larger than the BIOS boot partition" >&2; exit 1; }
    dd if="$WORK/core.img" of="$RAW" bs=512 seek="$CORE_LBA" conv=notrunc status=none
    { le $(( CORE_LBA + 1 )) 8; le $(( CORE_SECTORS - 1 )) 2; le $(( 0x820 )) 2; } |
        dd of="$RAW" bs=1 seek=$(( CORE_LBA * 512 + 0x1f4 )) conv=notrunc status=none
    BOOT_IMG="$ROOT/usr/lib/grub/i386-pc/boot.img"
    dd if="$BOOT_IMG" of="$RAW" bs=1 count=3 conv=notrunc status=none                 # jump
    dd if="$BOOT_IMG" of="$RAW" bs=1 skip=$(( 0x5a )) seek=$(( 0x5a )) count=$(( 0x1b8 - 0x5a )) conv=notrunc status=none
    le "$CORE_LBA" 8 | dd of="$RAW" bs=1 seek=$(( 0x5c )) conv=notrunc status=none
    printf '\x90\x90' | dd of="$RAW" bs=1 seek=$(( 0x66 )) conv=notrunc status=none  # hard disk: trust DL
fi
rm -rf "$ROOT"
BUILD_S=$(( $(date +%s) - T0 ))
log "raw disk ready ($(du -h --apparent-size "$RAW" | cut -f1) virtual, $(du -h "$RAW" | cut -f1) allocated)"

# ---- 4. the output formats -----------------------------------------------------------------------
NAME="vnflab-$ARCH"
cd "$OUT"
rm -f "$NAME.qcow2" "$NAME.ova"
for f in ${FORMATS//,/ }; do
    case "$f" in
        qcow2)
            log "qcow2 (compressed)"
            qemu-img convert -c -O qcow2 "$RAW" "$NAME.qcow2" ;;
        ova)
            log "ova (streamOptimized VMDK + OVF)"
            rm -rf "$WORK/ova" && mkdir -p "$WORK/ova"
            qemu-img convert -O vmdk -o subformat=streamOptimized "$RAW" "$WORK/ova/$NAME-disk1.vmdk"
            bash "$HERE/ovf.sh" "$NAME" "$ARCH" "$WORK/ova/$NAME-disk1.vmdk" "$DISK_BYTES" > "$WORK/ova/$NAME.ovf"
            ( cd "$WORK/ova" && {
                for f2 in "$NAME.ovf" "$NAME-disk1.vmdk"; do
                    echo "SHA256($f2)= $(sha256sum "$f2" | cut -d' ' -f1)"
                done > "$NAME.mf"
                # an OVA is a tar with the descriptor first
                tar --format=ustar -cf "$OUT/$NAME.ova" "$NAME.ovf" "$NAME-disk1.vmdk" "$NAME.mf"; } )
            rm -rf "$WORK/ova" ;;
        raw) cp --sparse=always "$RAW" "$NAME.raw" ;;
    esac
done
if [ "$KEEP_RAW" = 1 ]; then mv "$RAW" "$OUT/$NAME.raw"; fi
rm -rf "$WORK"
for f in "$NAME".qcow2 "$NAME".ova "$NAME".raw; do [ ! -f "$f" ] || sha256sum "$f"; done > SHA256SUMS.tmp
# keep the other architecture's lines when both were built into the same OUT
{ [ -f SHA256SUMS ] && grep -v " $NAME\." SHA256SUMS || true; cat SHA256SUMS.tmp; } > SHA256SUMS.new
mv SHA256SUMS.new SHA256SUMS && rm -f SHA256SUMS.tmp
TOTAL_S=$(( $(date +%s) - T0 ))
{
    echo "built $NAME from commit $COMMIT in ${TOTAL_S}s (root fs + disk: ${BUILD_S}s)"
    for f in "$NAME".qcow2 "$NAME".ova "$NAME".raw; do [ -f "$f" ] && echo "  $f: $(du -h --apparent-size "$f" | cut -f1)"; done
    echo "  virtual disk: $DISK_SIZE; root fs files: ${USED_MIB} MiB"
    echo "  login: student / $([ "$PASSWORD" = vnflab ] && echo "vnflab (the default)" || echo "the --password given")"
} | tee -a "$LOG"
