# Root filesystem stage of images/build (sourced, bash): mmdebstrap installs the recipe's
# packages from the machine's own apt sources and packs the result as a tarball, which the
# disk stage turns into the ext4 root.
#
# The machine's sources files that carry the recipe's suite are handed to mmdebstrap as its
# MIRROR arguments (it copies them into the image's /etc/apt), so the image comes from the
# same mirror or proxy the machine uses and no mirror host is named here. Without them
# mmdebstrap would fall back to its built-in default mirror.
#
# Downloaded .debs are kept in $cache/debs (arm64: $cache/debs-arm64) between runs
# (mmdebstrap's sync-in/sync-out hooks): a rebuild after a recipe change downloads only what
# changed.

# host_sources : the machine's apt sources files with an active entry for exactly $SUITE
# (or $SUITE-updates, $SUITE-security), one path a line. Third-party repositories for other
# suites stay out of the image.
host_sources() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        grep -Eq "^(deb(\s+\[[^]]*\])?\s+\S+|Suites:.*)\s$SUITE(-updates|-security)?(\s|\$)" "$f" && echo "$f"
    done
    return 0
}

stamp_lines() {
    local start=$SECONDS line
    while IFS= read -r line; do printf '[%4ss] %s\n' "$(( SECONDS - start ))" "$line"; done
}

# build_rootfs <tarball> : needs SUITE, KERNEL, PACKAGES from the recipe, DEB_ARCH, $cache,
# $here.
build_rootfs() {
    local tar=$1
    # One cache per architecture: sync-in copies the whole cache into the chroot.
    local debs=$cache/debs
    [ "$DEB_ARCH" = amd64 ] || debs=$cache/debs-$DEB_ARCH
    mkdir -p "$debs"
    local include
    include=$(IFS=,; echo "$KERNEL,${PACKAGES[*]}")
    local args=(
        --mode=root
        --variant=apt
        --architectures="$DEB_ARCH"
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
    local sources
    mapfile -t sources < <(host_sources)
    [ ${#sources[@]} -gt 0 ] || die "no apt source for $SUITE in /etc/apt/sources.list{,.d/} on this machine"
    log "mmdebstrap $SUITE ($DEB_ARCH) from ${sources[*]}: $KERNEL ${PACKAGES[*]}"
    # mmdebstrap's progress goes to a log file beside the cache; on failure its tail is shown.
    local mlog=$cache/$name-mmdebstrap.log
    # Each line is stamped with the seconds since the start, to see where the time goes.
    if ! TMPDIR=$work mmdebstrap "${args[@]}" "$SUITE" "$tar.tmp" "${sources[@]}" 2>&1 | stamp_lines >"$mlog"; then
        tail -n 30 "$mlog" >&2
        die "mmdebstrap failed: last 30 lines above, full log in $mlog"
    fi
    mv "$tar.tmp" "$tar"
}
