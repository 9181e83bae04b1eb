# shellcheck shell=bash
# common.sh: argument parsing, the report format, backups and guarded writes.
# Sourced by cohort-tune.sh after the recommended values are set.

ROOT=${COHORT_TUNE_ROOT:-}
MODE=
IFACE=
CPUS_ARG=
POLLERS_ARG=
PORTS_ARG=
STATE_DIR=${COHORT_TUNE_STATE:-/var/lib/cohort-tune}
ONLY=sysctl,busypoll,nic,cpu,memory,firewall
PERSIST=0
CHANGED_SYSCTLS=()
CPUS=()
PORTS=()
POLLERS=1
N_OK=0
N_WARN=0
N_FAIL=0
N_NA=0
N_CHANGED=0
N_CANNOT=0
N_MANUAL=0

usage() {
    sed -n '3,19p' "$TUNE_DIR/cohort-tune.sh" | sed 's/^# \{0,1\}//'
}

die_usage() {
    printf 'cohort-tune: %s\n' "$1" >&2
    printf 'usage: cohort-tune.sh check|apply|revert [--iface IF] [--cpus LIST] [--pollers N] [--ports P,..] [--state DIR] [--only AREA,..] [--persist]\n' >&2
    exit 2
}

# cpulist_expand "2-3,5" -> "2 3 5"; returns 1 on a malformed list.
cpulist_expand() {
    local list=$1 part lo hi out=() i
    [ -n "$list" ] || return 1
    local IFS=,
    for part in $list; do
        if [[ $part =~ ^([0-9]+)-([0-9]+)$ ]]; then
            lo=$((10#${BASH_REMATCH[1]})); hi=$((10#${BASH_REMATCH[2]}))
            [ "$lo" -le "$hi" ] || return 1
            [ $((hi - lo)) -le 4096 ] || return 1
            for ((i = lo; i <= hi; i++)); do out+=("$i"); done
        elif [[ $part =~ ^[0-9]+$ ]]; then
            out+=("$((10#$part))")
        else
            return 1
        fi
        [ ${#out[@]} -le 8192 ] || return 1
    done
    unset IFS
    printf '%s\n' "${out[*]}"
}

# list_has "1 2 3" 2 -> true
list_has() {
    local x
    for x in $1; do [ "$x" = "$2" ] && return 0; done
    return 1
}

# Join words with commas: "1 2" -> "1,2".
commas() {
    local out
    # shellcheck disable=SC2086
    out=$(printf '%s,' $1)
    [ "$out" = , ] && out=""
    printf '%s' "${out%,}"
}

# Read a file under ROOT; fails when absent or unreadable. Whitespace runs become one space.
rd() {
    local v
    [ -r "$ROOT$1" ] || return 1
    v=$(tr -s ' \t\n' '   ' < "$ROOT$1" 2> /dev/null) || return 1
    v=${v% }
    printf '%s' "$v"
}

sysctl_path() { printf '/proc/sys/%s' "${1//.//}"; }

in_child_netns() {
    [ -d "$ROOT/proc/sys/net/core" ] && [ ! -e "$ROOT/proc/sys/net/core/netdev_max_backlog" ]
}

area_on() { list_has "${ONLY//,/ }" "$1"; }

# emit VERDICT ITEM CURRENT RECOMMENDED FIX: one report line (check mode).
emit() {
    case $1 in
        OK) N_OK=$((N_OK + 1)) ;;
        WARN) N_WARN=$((N_WARN + 1)) ;;
        FAIL) N_FAIL=$((N_FAIL + 1)) ;;
        N/A) N_NA=$((N_NA + 1)) ;;
    esac
    LAST_VERDICT=$1
    if [ "$MODE" = check ]; then
        line "$1" "$2" "${3//|//}" "${4//|//}" "${5//|//}"
    fi
}

# True when apply should act on the item just emitted.
want_apply() {
    [ "$MODE" = apply ] && { [ "$LAST_VERDICT" = WARN ] || [ "$LAST_VERDICT" = FAIL ]; }
}

# One report line: VERDICT | ITEM | CURRENT | RECOMMENDED | FIX (the program prints the same).
line() { printf '%-4s | %-34s | %-24s | %-22s | %s\n' "$1" "$2" "$3" "$4" "$5"; }

# One action line of apply/revert: ACTION | ITEM | DETAIL | NOTE.
say() { printf '%s | %-34s | %s | %s\n' "$1" "$2" "${3//|//}" "${4//|//}"; }

manual() {
    N_MANUAL=$((N_MANUAL + 1))
    say MANUAL "$1" "not changed by apply (check-only item)" "$2"
}

cannot() {
    N_CANNOT=$((N_CANNOT + 1))
    say SKIP "$1" "cannot change here: $2" "-"
}

# --- backups -------------------------------------------------------------------------------
# $STATE_DIR/backup.tsv holds KIND<TAB>KEY<TAB>VALUE lines, oldest first. Only the first
# (original) value of a key is kept, so apply twice and revert once restores the original.
BACKUP_ADDED=0
REVERT_HINT="undo: cohort-tune.sh revert"

backup_file() { printf '%s/backup.tsv' "$STATE_DIR"; }

backup_has() {
    local f
    f=$(backup_file)
    [ -f "$f" ] && awk -F '\t' -v k="$1" -v key="$2" '$1 == k && $2 == key { found = 1 } END { exit !found }' "$f"
}

# backup_add KIND KEY VALUE: sets BACKUP_ADDED=1 when a new line was written.
backup_add() {
    BACKUP_ADDED=0
    backup_has "$1" "$2" && return 0
    if ! mkdir -p "$STATE_DIR" 2> /dev/null; then
        printf 'cohort-tune: cannot create state dir %s\n' "$STATE_DIR" >&2
        return 1
    fi
    chmod 700 "$STATE_DIR" 2> /dev/null
    printf '%s\t%s\t%s\n' "$1" "$2" "$3" >> "$(backup_file)" || return 1
    BACKUP_ADDED=1
}

# Drop the last line of the backup (a change that did not happen).
backup_undo() {
    local f
    [ "$BACKUP_ADDED" = 1 ] || return 0
    f=$(backup_file)
    sed -i '$ d' "$f"
    BACKUP_ADDED=0
}

# apply_file ITEM PATH VALUE SCOPE: back up, write, report. SCOPE is "net" (follows the network
# namespace) or "global" (host-wide: never changed from inside a child network namespace).
apply_file() {
    local item=$1 path=$2 value=$3 scope=$4 old err now
    if [ "$scope" = global ] && in_child_netns; then
        cannot "$item" "host-wide setting, not changed from inside a network namespace"
        return 0
    fi
    if [ ! -e "$ROOT$path" ]; then
        cannot "$item" "$path does not exist on this kernel or device"
        return 0
    fi
    old=$(rd "$path") || { cannot "$item" "$path is not readable"; return 0; }
    if ! backup_add file "$path" "$old"; then
        cannot "$item" "no backup possible in $STATE_DIR, not changing"
        return 0
    fi
    if ! err=$({ printf '%s\n' "$value" > "$ROOT$path"; } 2>&1); then
        backup_undo
        err=${err##*: }
        cannot "$item" "writing $path failed: ${err:-error} (read-only in this namespace or container, or unsupported)"
        return 0
    fi
    N_CHANGED=$((N_CHANGED + 1))
    case $path in /proc/sys/*) CHANGED_SYSCTLS+=("${path#/proc/sys/} = $value") ;; esac
    now=$(rd "$path")
    if [ "$now" != "$value" ]; then
        say CHANGED "$item" "$old -> $value (kernel now reports $now)" "$REVERT_HINT"
    else
        say CHANGED "$item" "$old -> $value" "$REVERT_HINT"
    fi
}

# --- entry ---------------------------------------------------------------------------------
parse_args() {
    [ $# -ge 1 ] || die_usage "missing mode"
    case $1 in
        check | apply | revert) MODE=$1 ;;
        -h | --help) usage; exit 0 ;;
        *) die_usage "unknown mode '$1'" ;;
    esac
    shift
    while [ $# -gt 0 ]; do
        case $1 in
            --iface) [ $# -ge 2 ] || die_usage "--iface needs a value"; IFACE=$2; shift 2 ;;
            --cpus) [ $# -ge 2 ] || die_usage "--cpus needs a value"; CPUS_ARG=$2; shift 2 ;;
            --pollers) [ $# -ge 2 ] || die_usage "--pollers needs a value"; POLLERS_ARG=$2; shift 2 ;;
            --ports) [ $# -ge 2 ] || die_usage "--ports needs a value"; PORTS_ARG=$2; shift 2 ;;
            --state) [ $# -ge 2 ] || die_usage "--state needs a value"; STATE_DIR=$2; shift 2 ;;
            --only) [ $# -ge 2 ] || die_usage "--only needs a value"; ONLY=$2; shift 2 ;;
            --persist) PERSIST=1; shift ;;
            -h | --help) usage; exit 0 ;;
            *) die_usage "unknown option '$1'" ;;
        esac
    done
    local a
    for a in ${ONLY//,/ }; do
        list_has "sysctl busypoll nic cpu memory firewall" "$a" || die_usage "unknown area '$a'"
    done
}

resolve_inputs() {
    local online cpus p
    online=$(rd /sys/devices/system/cpu/online) || online=0
    online=$(cpulist_expand "$online") || online=0
    if [ -n "$POLLERS_ARG" ]; then
        if ! [[ $POLLERS_ARG =~ ^[0-9]{1,4}$ ]] || [ "$POLLERS_ARG" -lt 1 ] || [ "$POLLERS_ARG" -gt 1024 ]; then
            die_usage "--pollers must be a number from 1 to 1024"
        fi
    fi
    if [ -n "$CPUS_ARG" ]; then
        cpus=$(cpulist_expand "$CPUS_ARG") || die_usage "--cpus '$CPUS_ARG' is not a CPU list (e.g. 2-3,5)"
        read -r -a CPUS <<< "$cpus"
        local seen=""
        for p in "${CPUS[@]}"; do
            list_has "$online" "$p" || die_usage "CPU $p is not online (online: $(commas "$online"))"
            list_has "$seen" "$p" && die_usage "CPU $p is listed twice in --cpus (one poller per CPU)"
            seen+=" $p"
        done
        if [ -n "$POLLERS_ARG" ] && [ "$POLLERS_ARG" -ne "${#CPUS[@]}" ]; then
            die_usage "--pollers $POLLERS_ARG but --cpus lists ${#CPUS[@]} CPUs"
        fi
        POLLERS=${#CPUS[@]}
    else
        POLLERS=${POLLERS_ARG:-1}
        read -r -a CPUS <<< "$online"
        [ "$POLLERS" -le "${#CPUS[@]}" ] || die_usage "--pollers $POLLERS but only ${#CPUS[@]} CPUs are online"
        CPUS=("${CPUS[@]:${#CPUS[@]}-POLLERS}")
    fi
    if [ -n "$PORTS_ARG" ]; then
        local IFS=,
        for p in $PORTS_ARG; do
            if ! [[ $p =~ ^[0-9]{1,5}$ ]] || [ "$((10#$p))" -lt 1 ] || [ "$((10#$p))" -gt 65535 ]; then
                die_usage "--ports: '$p' is not a port (1-65535)"
            fi
            PORTS+=("$((10#$p))")
        done
        unset IFS
    fi
    if [ -z "$IFACE" ]; then
        IFACE=$(awk 'NR > 1 && $2 == "00000000" { print $1; exit }' "$ROOT/proc/net/route" 2> /dev/null)
    elif [ ! -e "$ROOT/sys/class/net/$IFACE" ]; then
        die_usage "interface '$IFACE' does not exist"
    fi
}

run_areas() {
    area_on sysctl && check_sysctl
    area_on busypoll && check_busypoll
    area_on nic && check_nic
    area_on cpu && check_cpu
    area_on memory && check_memory
    area_on firewall && check_firewall
    return 0
}

# apply and revert write kernel settings: they need root on a real host, and one at a time.
guard_writes() {
    if [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ]; then
        printf 'cohort-tune: %s needs root (running as uid %s); check works as any user\n' "$MODE" "$(id -u)" >&2
        exit 2
    fi
    if ! mkdir -p "$STATE_DIR" 2> /dev/null; then
        printf 'cohort-tune: cannot create state dir %s\n' "$STATE_DIR" >&2
        exit 2
    fi
    chmod 700 "$STATE_DIR" 2> /dev/null
    if command -v flock > /dev/null 2>&1; then
        exec 9> "$STATE_DIR/lock"
        if ! flock -n 9; then
            printf 'cohort-tune: another apply/revert holds %s/lock\n' "$STATE_DIR" >&2
            exit 2
        fi
    fi
}

main() {
    parse_args "$@"
    resolve_inputs
    [ "$MODE" = check ] || guard_writes
    case $MODE in
        check)
            printf '# cohort tune check: iface=%s cpus=%s pollers=%s ports=%s\n' \
                "${IFACE:-none}" "$(commas "${CPUS[*]}")" "$POLLERS" "$(commas "${PORTS[*]:-}")"
            line VERDICT ITEM CURRENT RECOMMENDED FIX
            run_areas
            if [ "$N_FAIL" -eq 0 ]; then
                printf 'SUMMARY | %d OK, %d WARN, %d FAIL, %d N/A | READY: no item FAILs\n' "$N_OK" "$N_WARN" "$N_FAIL" "$N_NA"
                exit 0
            fi
            printf 'SUMMARY | %d OK, %d WARN, %d FAIL, %d N/A | NOT READY: %d item(s) FAIL\n' "$N_OK" "$N_WARN" "$N_FAIL" "$N_NA" "$N_FAIL"
            exit 1
            ;;
        apply)
            REVERT_HINT="undo: cohort-tune.sh revert --state $STATE_DIR"
            printf '# cohort tune apply: iface=%s cpus=%s pollers=%s state=%s\n' \
                "${IFACE:-none}" "$(commas "${CPUS[*]}")" "$POLLERS" "$STATE_DIR"
            run_areas
            [ "$PERSIST" = 1 ] && persist_sysctls
            printf 'APPLIED | %d changed, %d could not change here, %d need a manual step | backup: %s\n' \
                "$N_CHANGED" "$N_CANNOT" "$N_MANUAL" "$(backup_file)"
            exit 0
            ;;
        revert)
            revert_all
            ;;
    esac
}

# --persist: write the sysctls apply changed to a sysctl.d file (backed up like any value).
# Keys use "/" separators, so dots in interface names stay literal (sysctl.d(5)).
persist_sysctls() {
    local f=$ROOT$SYSCTL_PERSIST_FILE old=absent err
    [ ${#CHANGED_SYSCTLS[@]} -gt 0 ] || return 0
    if in_child_netns; then
        cannot persist "$SYSCTL_PERSIST_FILE is host-wide, not written from inside a network namespace"
        return 0
    fi
    [ -f "$f" ] && old=$(base64 -w 0 < "$f")
    backup_add file-content "$SYSCTL_PERSIST_FILE" "$old" || { cannot persist "no backup possible in $STATE_DIR"; return 0; }
    if ! err=$( { mkdir -p "${f%/*}" && { printf '# Written by cohort-tune.sh apply --persist (undo: cohort-tune.sh revert).\n'; printf '%s\n' "${CHANGED_SYSCTLS[@]}"; } > "$f"; } 2>&1); then
        backup_undo
        cannot persist "writing $SYSCTL_PERSIST_FILE failed: $err"
        return 0
    fi
    N_CHANGED=$((N_CHANGED + 1))
    say CHANGED persist "wrote ${#CHANGED_SYSCTLS[@]} sysctl(s) to $SYSCTL_PERSIST_FILE" "$REVERT_HINT"
}

# Restore every backed-up value, newest first. Exit 0 when all were restored.
revert_all() {
    local f lines=() i kind key value failed=0 err now
    f=$(backup_file)
    if [ ! -f "$f" ]; then
        printf 'REVERTED | nothing to revert: no backup at %s\n' "$f"
        exit 0
    fi
    mapfile -t lines < "$f"
    for ((i = ${#lines[@]} - 1; i >= 0; i--)); do
        IFS=$'\t' read -r kind key value <<< "${lines[i]}"
        case $kind in
            file)
                if err=$({ printf '%s\n' "$value" > "$ROOT$key"; } 2>&1); then
                    now=$(rd "$key")
                    say RESTORED "$key" "$value" "kernel reports ${now:-?}"
                else
                    failed=$((failed + 1))
                    say FAILED "$key" "$value" "${err##*: }"
                fi
                ;;
            file-content)
                if [ "$value" = absent ]; then
                    err=$(rm -f "$ROOT$key" 2>&1)
                else
                    err=$(printf '%s' "$value" | base64 -d > "$ROOT$key" 2>&1)
                fi
                if [ -z "$err" ]; then say RESTORED "$key" "${value:0:20}" "-"; else
                    failed=$((failed + 1)); say FAILED "$key" "$value" "$err"; fi
                ;;
            ethtool-L | ethtool-G | ethtool-C | ethtool-X)
                # shellcheck disable=SC2086
                if err=$(ethtool "-${kind#ethtool-}" "$key" $value 2>&1); then
                    say RESTORED "$kind $key" "$value" "-"
                else
                    failed=$((failed + 1)); say FAILED "$kind $key" "$value" "$err"
                fi
                ;;
            service)
                if err=$(service_ctl start "$key" 2>&1); then say RESTORED "service $key" "$value" "-"; else
                    failed=$((failed + 1)); say FAILED "service $key" "$value" "$err"; fi
                ;;
            *)
                failed=$((failed + 1)); say FAILED "$kind $key" "$value" "unknown backup kind"
                ;;
        esac
    done
    if [ "$failed" -eq 0 ]; then
        mv "$f" "$f.reverted" 2> /dev/null
        printf 'REVERTED | %d value(s) restored | backup moved to %s.reverted\n' "${#lines[@]}" "$f"
        exit 0
    fi
    printf 'REVERTED | %d of %d value(s) could not be restored | backup kept at %s\n' "$failed" "${#lines[@]}" "$f"
    exit 1
}

service_ctl() {
    if [ -d "$ROOT/run/systemd/system" ] && command -v systemctl > /dev/null 2>&1; then
        systemctl "$1" "$2"
    elif command -v service > /dev/null 2>&1; then
        service "$2" "$1"
    else
        printf 'no service manager\n'
        return 1
    fi
}
