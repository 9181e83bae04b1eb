# shellcheck shell=bash
# memory.sh: locked-memory limit (io_uring registered buffers), systemd's default, transparent
# and explicit huge pages.

check_memlock() {
    local item=mem.memlock soft rec_kib cur
    rec_kib=$((REC_MEMLOCK_KIB_PER_POLLER * POLLERS))
    # /proc/self/limits of the reading process: the same limit this shell runs with.
    soft=$(awk '/^Max locked memory/ { print $4 }' "$ROOT/proc/self/limits" 2> /dev/null)
    if [ -z "$soft" ]; then
        emit N/A "$item" "unreadable" ">= $rec_kib KiB" "-"
        return 0
    fi
    if [ "$soft" = unlimited ]; then
        emit OK "$item" unlimited ">= $rec_kib KiB" "-"
        return 0
    fi
    cur="$((soft / 1024)) KiB"
    if [ $((soft / 1024)) -ge "$rec_kib" ]; then
        emit OK "$item" "$cur" ">= $rec_kib KiB" "-"
        return 0
    fi
    emit FAIL "$item" "$cur" ">= $rec_kib KiB" "ulimit -l $rec_kib; persist: $MEMLOCK_LIMITS_FILE"
    want_apply || return 0
    if in_child_netns; then
        cannot "$item" "host-wide setting, not changed from inside a network namespace"
        return 0
    fi
    local f=$ROOT$MEMLOCK_LIMITS_FILE old=absent err
    [ -f "$f" ] && old=$(base64 -w 0 < "$f")
    backup_add file-content "$MEMLOCK_LIMITS_FILE" "$old" || { cannot "$item" "no backup possible in $STATE_DIR"; return 0; }
    if ! err=$( { mkdir -p "${f%/*}" && printf '# Written by cohort-tune.sh apply: locked memory for io_uring registered buffers.\n*    -  memlock  %s\nroot -  memlock  %s\n' "$rec_kib" "$rec_kib" > "$f"; } 2>&1); then
        backup_undo
        cannot "$item" "writing $MEMLOCK_LIMITS_FILE failed: $err"
        return 0
    fi
    N_CHANGED=$((N_CHANGED + 1))
    say CHANGED "$item" "wrote $MEMLOCK_LIMITS_FILE" "applies to new logins; systemd units need LimitMEMLOCK"
}

check_systemd_memlock() {
    local item=mem.systemd_memlock cur rec_bytes rec
    rec_bytes=$((REC_MEMLOCK_KIB_PER_POLLER * POLLERS * 1024))
    rec=">= $rec_bytes or infinity"
    if [ ! -d "$ROOT/run/systemd/system" ] || ! command -v systemctl > /dev/null 2>&1; then
        emit N/A "$item" "systemd is not init" "$rec" "-"
        return 0
    fi
    cur=$(systemctl show --property=DefaultLimitMEMLOCK --value 2> /dev/null)
    if [ -z "$cur" ]; then
        emit N/A "$item" "unreadable" "$rec" "-"
        return 0
    fi
    if [ "$cur" = infinity ] || { is_num "$cur" && [ "$cur" -ge "$rec_bytes" ]; }; then
        emit OK "$item" "$cur" "$rec" "-"
        return 0
    fi
    local fix="(manual) LimitMEMLOCK=infinity in the cohort unit's [Service]"
    emit WARN "$item" "$cur" "$rec" "$fix"
    want_apply && manual "$item" "$fix"
}

# Bracketed choice of a THP file: "always [madvise] never" -> madvise.
thp_choice() {
    local v
    v=$(rd "$1") || return 1
    v=${v#*[}
    printf '%s' "${v%%]*}"
}

thp_item() {
    local item=$1 path=$2 rec=$3 cur
    if ! cur=$(thp_choice "$path"); then
        emit N/A "$item" "no THP on this kernel" "$rec or never" "-"
        return 0
    fi
    if [ "$cur" = always ]; then
        emit WARN "$item" "$cur" "$rec or never" "echo $rec > $path"
        want_apply && apply_file "$item" "$path" "$rec" global
    else
        emit OK "$item" "$cur" "$rec or never" "-"
    fi
}

check_memory() {
    check_memlock
    check_systemd_memlock
    thp_item mem.thp_enabled /sys/kernel/mm/transparent_hugepage/enabled "$REC_THP_ENABLED"
    thp_item mem.thp_defrag /sys/kernel/mm/transparent_hugepage/defrag "$REC_THP_DEFRAG"
    sysctl_min vm.nr_hugepages $((REC_HUGEPAGES_PER_POLLER * POLLERS)) WARN global
}
