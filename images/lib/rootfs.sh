# Root filesystem stage of images/build (sourced, bash): mmdebstrap installs the recipe's
# packages from the machine's own apt sources (no mirror argument: mmdebstrap then reads
# /etc/apt/sources.list and sources.list.d, so no mirror host is named here) and packs the
# result as a tarball, which the disk stage turns into the ext4 root.
#
# Downloaded .debs are kept in $cache/debs between runs (mmdebstrap's sync-in/sync-out
# hooks): a rebuild after a recipe change downloads only what changed.

# build_rootfs <tarball> : needs SUITE, KERNEL, PACKAGES from the recipe, $cache, $here.
build_rootfs() {
    local tar=$1
    local debs=$cache/debs
    mkdir -p "$debs"
    local include
    include=$(IFS=,; echo "$KERNEL,${PACKAGES[*]}")
    local args=(
        --mode=root
        --variant=apt
        # Merged /usr through the usr-is-merged package, as Debian 12 installs do; without
        # it apt satisfies init-system-helpers with usrmerge, which drags in all of perl.
        --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
        --aptopt='Apt::Install-Recommends "false"'
        # Documentation, manual pages and translations are not needed on a server that is
        # provisioned by cloud-init; copyright files stay. Written to
        # /etc/dpkg/dpkg.cfg.d/99mmdebstrap, so later installs on the machine skip them too.
        --dpkgopt='path-exclude=/usr/share/doc/*'
        --dpkgopt='path-include=/usr/share/doc/*/copyright'
        --dpkgopt='path-exclude=/usr/share/man/*'
        --dpkgopt='path-exclude=/usr/share/info/*'
        --dpkgopt='path-exclude=/usr/share/locale/*'
        --dpkgopt='path-include=/usr/share/locale/locale.alias'
        --dpkgopt='path-exclude=/usr/share/lintian/*'
        --include="$include"
        # --skip=essential/unlink keeps the essential set's .debs for sync-out.
        --skip=essential/unlink
        --setup-hook='mkdir -p "$1/var/cache/apt/archives"'
        --setup-hook="sync-in $debs /var/cache/apt/archives"
        --customize-hook="sync-out /var/cache/apt/archives $debs"
        --customize-hook="$here/lib/customize"
        --format=tar
    )
    log "mmdebstrap $SUITE: $KERNEL ${PACKAGES[*]}"
    # mmdebstrap's progress goes to a log file beside the cache; on failure its tail is shown.
    local mlog=$cache/$name-mmdebstrap.log
    if ! mmdebstrap "${args[@]}" "$SUITE" "$tar.tmp" >"$mlog" 2>&1; then
        tail -n 30 "$mlog" >&2
        die "mmdebstrap failed: last 30 lines above, full log in $mlog"
    fi
    mv "$tar.tmp" "$tar"
}
