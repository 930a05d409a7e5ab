# Disk stage of images/build (sourced, bash): root filesystem tarball -> raw GPT disk that
# boots under BIOS and UEFI (arm64: UEFI). Works on the image file itself (this host's kernel
# cannot mount vfat, and creates no partition nodes by itself):
#   mkfs.ext4 -d  fills the root filesystem from a directory, at an offset in the file
#   mkfs.vfat + mtools  make and fill the ESP at its offset
#   grub-mkimage  builds the GRUB cores with their modules built in; grub-bios-setup
#                 writes the BIOS boot sector and core into the image file (the one step
#                 that needs a loop device and a read-only mount, see bios_setup)
#
# Layout (Debian cloud images' numbering, which the installer keeps and tests check):
#   14  BIOS boot   sectors 2048..8191      (3 MiB)    GRUB i386-pc core.img (x86_64 only:
#                                                     arm64 leaves these sectors unused)
#   15  ESP (vfat)  sectors 8192..262143    (124 MiB)  \EFI\BOOT\BOOTX64.EFI (arm64:
#                                                     BOOTAA64.EFI): Debian's signed shim when
#                                                     the recipe installs shim-signed and
#                                                     grub-efi-<arch>-signed (Secure Boot), else
#                                                     GRUB x86_64-efi (arm64-efi) built here
#    1  root (ext4) sectors 262144..end                label "root"; last on the disk so
#                                                     cloud-init's growpart can grow it
# The GRUB cores find the root filesystem by UUID and read the same /boot/grub/grub.cfg.

SECTOR=512
BIOS_START=2048 BIOS_END=8191
ESP_START=8192 ESP_END=262143
ROOT_START=262144
# Linux root (x86-64, arm64): the Discoverable Partitions type for / of the image's
# architecture, what Debian's cloud images use.
TYPE_ROOT_AMD64=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709
TYPE_ROOT_ARM64=B921B045-1DF0-41C3-AF44-4C6F280D3FAE
TYPE_ESP=C12A7328-F81F-11D2-BA4B-00A0C93EC93B
TYPE_BIOS=21686148-6449-6E6F-744E-656564454649

# GRUB modules built into both cores: GPT, ext4 and FAT, finding the root by UUID, the
# serial console, the menu (normal) and the Linux loader. Nothing is loaded from disk later.
GRUB_MODULES="part_gpt part_msdos ext2 fat search search_fs_uuid search_label normal linux
    echo test serial terminal gzio configfile boot ls cat halt reboot"

# A UUID that is fixed for a given image name and purpose, so that rebuilding the same
# recipe gives the same disk identity (and the same grub.cfg, fstab and bytes around them).
stable_uuid() {
    local h
    h=$(printf 'osie-image:%s:%s' "$name" "$1" | sha256sum)
    # RFC 4122 version 4 layout (random-looking, version and variant bits set).
    printf '%s-%s-4%s-%x%s-%s\n' "${h:0:8}" "${h:8:4}" "${h:13:3}" $(( (0x${h:16:1} & 3) | 8 )) "${h:17:3}" "${h:20:12}"
}

# What differs between the architectures: the root partition's type, the UEFI names (EFI
# suffix x64/aa64, as in shimx64.efi and BOOTX64.EFI), the GRUB platform, BIOS or not.
arch_settings() {
    case $DEB_ARCH in
        amd64) TYPE_ROOT=$TYPE_ROOT_AMD64 EFI_ARCH=x64 GRUB_EFI=x86_64-efi BIOS=1 ;;
        arm64) TYPE_ROOT=$TYPE_ROOT_ARM64 EFI_ARCH=aa64 GRUB_EFI=arm64-efi BIOS= ;;
        *) die "no disk layout for architecture $DEB_ARCH" ;;
    esac
    EFI_BOOT=BOOT$(echo "$EFI_ARCH" | tr a-z A-Z).EFI
}

# assemble_disk <rootfs tarball> <raw output> : needs DISK_SIZE, CMDLINE, DEB_ARCH, $work.
assemble_disk() {
    local tar=$1 raw=$2
    arch_settings
    local bytes sectors root_end
    bytes=$(numfmt --from=iec "$DISK_SIZE" 2>/dev/null) || die "recipe: DISK_SIZE=$DISK_SIZE: not a size like 2G"
    sectors=$(( bytes / SECTOR ))
    # The backup GPT takes the last 33 sectors.
    root_end=$(( sectors - 34 ))
    (( root_end > ROOT_START + 262144 )) || die "recipe: DISK_SIZE=$DISK_SIZE is too small"

    local root_uuid esp_id
    root_uuid=$(stable_uuid root-fs)
    esp_id=$(printf 'osie-image:%s:esp' "$name" | sha256sum | cut -c1-8)

    local bios_part=()
    if [ -n "$BIOS" ]; then
        bios_part=(--new=14:$BIOS_START:$BIOS_END --typecode=14:$TYPE_BIOS --change-name=14:bios
            --partition-guid=14:"$(stable_uuid part14)")
    fi
    log "partitioning $DISK_SIZE (GPT: ${BIOS:+14 BIOS boot, }15 ESP, 1 root)"
    rm -f "$raw"
    truncate -s "$bytes" "$raw"
    quiet "sgdisk on $raw" sgdisk --clear \
        --disk-guid="$(stable_uuid disk)" \
        "${bios_part[@]}" \
        --new=15:$ESP_START:$ESP_END --typecode=15:$TYPE_ESP --change-name=15:esp \
        --partition-guid=15:"$(stable_uuid part15)" \
        --new=1:$ROOT_START:$root_end --typecode=1:$TYPE_ROOT --change-name=1:root \
        --partition-guid=1:"$(stable_uuid part1)" \
        "$raw"

    log "unpacking the root filesystem"
    local dir=$work/root
    mkdir -p "$dir"
    tar --numeric-owner --xattrs --xattrs-include='*' -xpf "$tar" -C "$dir"
    # FAT volume ids show up in upper case in /dev/disk/by-uuid.
    write_boot_config "$dir" "$root_uuid" "$(echo "${esp_id:0:4}-${esp_id:4:4}" | tr a-f A-F)"
    write_grub_cores "$root_uuid" "$dir"
    # Debian's signed shim and GRUB, if the recipe installed them: the ESP boots through them.
    local signed= shim=shim$EFI_ARCH.efi grub=grub$EFI_ARCH.efi
    if [ -f "$dir/usr/lib/shim/$shim.signed" ] && [ -f "$dir/usr/lib/grub/$GRUB_EFI-signed/$grub.signed" ]; then
        cp "$dir/usr/lib/shim/$shim.signed" "$work/$shim"
        cp "$dir/usr/lib/grub/$GRUB_EFI-signed/$grub.signed" "$work/$grub"
        # The signed GRUB's embedded prefix is /EFI/debian on the ESP: it sources grub.cfg from
        # there, which hands over to the root filesystem's /boot/grub/grub.cfg.
        cat > "$work/debian-grub.cfg" <<EOF
search --no-floppy --fs-uuid --set=root $root_uuid
set prefix=(\$root)/boot/grub
configfile \$prefix/grub.cfg
EOF
        signed=1
    fi

    log "making the ext4 root (label root, UUID $root_uuid)"
    local root_kib=$(( (root_end - ROOT_START + 1) * SECTOR / 1024 ))
    # -E offset writes the filesystem inside the image at partition 1; -d copies the tree
    # with owners, modes, xattrs and hard links. Inode tables are left for the kernel to
    # initialise lazily, which keeps the image's data (and what the installer writes) small.
    mkfs.ext4 -q -F -L root -U "$root_uuid" -E "offset=$(( ROOT_START * SECTOR )),lazy_itable_init=1,root_owner=0:0" \
        -d "$dir" "$raw" "${root_kib}k" || die "mkfs.ext4 -d failed on $raw"
    rm -rf "$dir"

    log "making the ESP (vfat, volume id ${esp_id:0:4}-${esp_id:4:4}) and GRUB for UEFI"
    local esp_kib=$(( (ESP_END - ESP_START + 1) * SECTOR / 1024 ))
    quiet "mkfs.vfat on $raw" mkfs.vfat -F 32 -s 1 -n EFI -i "$esp_id" --offset=$ESP_START "$raw" "$esp_kib"
    local esp="$raw@@$(( ESP_START * SECTOR ))"
    MTOOLS_SKIP_CHECK=1 mmd -i "$esp" ::/EFI ::/EFI/BOOT
    if [ -n "$signed" ]; then
        # Where Debian's grub-install puts them (the installer's boot entry names
        # \EFI\debian\shimx64.efi, arm64 shimaa64.efi), and the removable-media path the
        # firmware falls back to: shim as BOOTX64.EFI (BOOTAA64.EFI) loads grubx64.efi
        # (grubaa64.efi) from beside it.
        log "ESP: Debian's signed shim and GRUB (Secure Boot)"
        MTOOLS_SKIP_CHECK=1 mmd -i "$esp" ::/EFI/debian
        MTOOLS_SKIP_CHECK=1 mcopy -i "$esp" "$work/$shim" "::/EFI/debian/$shim"
        MTOOLS_SKIP_CHECK=1 mcopy -i "$esp" "$work/$grub" "::/EFI/debian/$grub"
        MTOOLS_SKIP_CHECK=1 mcopy -i "$esp" "$work/debian-grub.cfg" ::/EFI/debian/grub.cfg
        MTOOLS_SKIP_CHECK=1 mcopy -i "$esp" "$work/$shim" "::/EFI/BOOT/$EFI_BOOT"
        MTOOLS_SKIP_CHECK=1 mcopy -i "$esp" "$work/$grub" "::/EFI/BOOT/$grub"
    else
        MTOOLS_SKIP_CHECK=1 mcopy -i "$esp" "$work/$EFI_BOOT" "::/EFI/BOOT/$EFI_BOOT"
    fi

    if [ -n "$BIOS" ]; then
        log "installing GRUB for BIOS (boot sector, core in partition 14)"
        bios_setup "$raw" "$root_end"
    fi
    quiet "sgdisk --verify (GPT of $raw)" sgdisk --verify "$raw"
}

# write_boot_config <root dir> <root fs UUID> <ESP volume id> : grub.cfg and fstab.
write_boot_config() {
    local dir=$1 uuid=$2 esp=$3
    mkdir -p "$dir/boot/grub" "$dir/boot/efi"
    # /vmlinuz and /initrd.img are the kernel package's symlinks to the newest kernel, so
    # kernel upgrades on the machine boot without regenerating this file.
    # x86: GRUB drives the first 16550 UART itself. arm64 GRUB has no driver for the
    # machine's UART (PL011): its console is the firmware's, which includes the serial port.
    local serial=
    [ -z "$BIOS" ] || serial='serial --unit=0 --speed=115200
terminal_input console serial
terminal_output console serial'
    cat > "$dir/boot/grub/grub.cfg" <<EOF
# Written by the osie image recipe (images/lib/disk.sh). Read by every GRUB core: the BIOS
# one in partition 14 (x86_64) and the UEFI one in the ESP (partition 15).
${serial:+$serial
}set timeout=0
set default=0
menuentry "Debian GNU/Linux" {
    search --no-floppy --fs-uuid --set=root $uuid
    linux /vmlinuz root=UUID=$uuid ro $CMDLINE
    initrd /initrd.img
}
EOF
    cat > "$dir/etc/fstab" <<EOF
# Written by the osie image recipe (images/lib/disk.sh).
UUID=$uuid / ext4 rw,discard,errors=remount-ro 0 1
UUID=$esp /boot/efi vfat umask=0077,nofail,x-systemd.device-timeout=10s 0 2
EOF
}

# write_grub_cores <root fs UUID> <root dir> : <root>/boot/grub/i386-pc/{boot,core}.img,
# where grub-bios-setup reads them (and where they stay, to reinstall from on the machine;
# x86_64 only), and $work/BOOTX64.EFI (BOOTAA64.EFI) for the ESP.
write_grub_cores() {
    local uuid=$1 dir=$2
    # Runs before normal mode: find the root filesystem, then normal mode reads
    # $prefix/grub.cfg from it.
    cat > "$work/embed.cfg" <<EOF
search --no-floppy --fs-uuid --set=root $uuid
set prefix=(\$root)/boot/grub
EOF
    if [ -n "$BIOS" ]; then
        mkdir -p "$dir/boot/grub/i386-pc"
        cp /usr/lib/grub/i386-pc/boot.img "$dir/boot/grub/i386-pc/boot.img"
        # shellcheck disable=SC2086 # GRUB_MODULES is a word list
        grub-mkimage -O i386-pc -o "$dir/boot/grub/i386-pc/core.img" -c "$work/embed.cfg" -p /boot/grub \
            biosdisk $GRUB_MODULES || die "grub-mkimage i386-pc failed"
    fi
    # grub-mkimage takes the modules of the target platform from /usr/lib/grub/<platform>
    # (arm64: the multiarch package grub-efi-arm64-bin:arm64).
    # shellcheck disable=SC2086
    grub-mkimage -O "$GRUB_EFI" -o "$work/$EFI_BOOT" -c "$work/embed.cfg" -p /boot/grub efi_gop $GRUB_MODULES ||
        die "grub-mkimage $GRUB_EFI failed"
}

# bios_setup <raw> <root end sector> : grub-bios-setup writes boot.img into the MBR, patched
# to load core.img from the BIOS boot partition it finds in the GPT. It insists on finding
# the block device that holds boot.img and core.img, so the root filesystem is attached as
# a read-only loop device of its own (at partition 1's offset: a whole device, which GRUB
# understands without udev) and mounted read-only for the time of the call.
bios_setup() {
    local raw=$1 root_end=$2
    loop=$(losetup --find --show --read-only --offset=$(( ROOT_START * SECTOR )) \
        --sizelimit=$(( (root_end - ROOT_START + 1) * SECTOR )) "$raw") || die "losetup on $raw failed"
    mnt=$work/mnt
    mkdir -p "$mnt"
    mount -o ro -t ext4 "$loop" "$mnt" || die "mounting the root of $raw ($loop) failed"
    quiet "grub-bios-setup on $raw" /usr/lib/grub/i386-pc/grub-bios-setup --directory="$mnt/boot/grub/i386-pc" "$raw"
    disk_cleanup
}

# Unmount and detach what bios_setup attached; safe to call twice (the build's exit trap
# calls it too, so a failure in between leaves nothing behind).
disk_cleanup() {
    if [ -n "${mnt:-}" ] && mountpoint -q "$mnt"; then
        umount "$mnt" || umount -l "$mnt"
    fi
    mnt=
    if [ -n "${loop:-}" ]; then
        losetup -d "$loop" 2>/dev/null || true
    fi
    loop=
}

# quiet <what> <command…> : run, keeping its chatter; show it and fail if the command does.
quiet() {
    local what=$1
    shift
    if ! "$@" >"$work/cmd.log" 2>&1; then
        cat "$work/cmd.log" >&2
        die "$what failed"
    fi
}
