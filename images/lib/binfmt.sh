# Foreign-architecture builds (sourced by images/build, bash): mmdebstrap installs arm64
# packages whose maintainer scripts are arm64 programs. The kernel runs them through
# qemu-user-static when binfmt_misc has an entry for arm64 ELF files.
#
# On a Debian 12 machine booted with systemd, installing qemu-user-static registers the
# entry (systemd-binfmt reads /usr/lib/binfmt.d/qemu-aarch64.conf). Containers and machines
# without systemd as init have neither the binfmt_misc filesystem mounted nor the entry: this
# does what systemd-binfmt would, from the same file. The entry has the F flag: the kernel
# opens the interpreter now, so it works inside the chroot, which has no qemu of its own.

# ensure_binfmt <debian arch> : the binfmt_misc entry for that architecture is enabled.
ensure_binfmt() {
    local qarch
    case $1 in
        arm64) qarch=aarch64 ;;
        *) die "no binfmt_misc entry known for $1" ;;
    esac
    local dir=/proc/sys/fs/binfmt_misc conf=/usr/lib/binfmt.d/qemu-$qarch.conf
    [ -f "$conf" ] || die "missing $conf (package qemu-user-static; scripts/setup installs it)"
    if [ ! -e "$dir/register" ]; then
        mount -t binfmt_misc binfmt_misc "$dir" ||
            die "cannot mount binfmt_misc on $dir (needed to run $1 package scripts under qemu-user-static)"
    fi
    if [ ! -e "$dir/qemu-$qarch" ]; then
        log "registering qemu-$qarch with binfmt_misc (from $conf)"
        # One ':name:type:offset:magic:mask:interpreter:flags' line; comments and blank
        # lines are systemd-binfmt's, not the kernel's.
        grep -v -e '^[#;]' -e '^$' "$conf" > "$dir/register" ||
            die "binfmt_misc refused the entry in $conf"
    fi
    grep -qx enabled "$dir/status" || die "binfmt_misc is disabled ($dir/status): echo 1 > $dir/status"
    grep -qx enabled "$dir/qemu-$qarch" ||
        die "the binfmt_misc entry qemu-$qarch is disabled: echo 1 > $dir/qemu-$qarch"
    local interp
    interp=$(awk '/^interpreter/ {print $2}' "$dir/qemu-$qarch")
    [ -x "$interp" ] || die "binfmt_misc entry qemu-$qarch names $interp, which is missing (qemu-user-static)"
}
