# shellcheck shell=bash
# cpu.sh: isolation on the kernel command line (check only), frequency governor, C-states and
# SMT siblings of the poller CPUs.

# Value of a kernel parameter (before "--", which starts init's arguments); fails when absent.
cmdline_param() {
    local w v="" found=1
    for w in $(rd /proc/cmdline); do
        [ "$w" = -- ] && break
        case $w in "$1="*) v=${w#*=}; found=0 ;; esac
    done
    printf '%s' "$v"
    return $found
}

# CPU-list part of isolcpus/nohz_full/rcu_nocbs (flags such as managed_irq,domain dropped).
cmdline_cpus() {
    local v part out=""
    v=$(cmdline_param "$1") || return 1
    local IFS=,
    for part in $v; do
        [[ $part =~ ^[0-9]+(-[0-9]+)?$ ]] && out+="$part,"
    done
    unset IFS
    cpulist_expand "${out%,}" 2> /dev/null
}

check_cmdline_item() {
    local param=$1 item=cpu.$1 cur list cpu all=1 want rec
    want=$(commas "${CPUS[*]}")
    rec="includes $want"
    [ "$param" = isolcpus ] && want="managed_irq,domain,$want"
    if ! cur=$(cmdline_param "$param"); then
        cur=absent
        all=0
    else
        list=$(cmdline_cpus "$param") || list=""
        for cpu in "${CPUS[@]}"; do list_has "$list" "$cpu" || all=0; done
    fi
    if [ "$all" = 1 ]; then
        emit OK "$item" "$cur" "$rec" "-"
    else
        local fix="(manual, reboot) grubby --update-kernel=ALL --args=$param=$want"
        emit WARN "$item" "$cur" "$rec" "$fix"
        want_apply && manual "$item" "$fix"
    fi
}

check_governor() {
    local item=cpu.governor cpu path cur bad=() seen=0 now=()
    for cpu in "${CPUS[@]}"; do
        path=/sys/devices/system/cpu/cpu$cpu/cpufreq/scaling_governor
        cur=$(rd "$path") || continue
        seen=1
        now+=("cpu$cpu=$cur")
        [ "$cur" = "$REC_GOVERNOR" ] || bad+=("$cpu")
    done
    if [ "$seen" = 0 ]; then
        emit N/A "$item" "no cpufreq (VM or fixed)" "$REC_GOVERNOR" "-"
        return 0
    fi
    if [ ${#bad[@]} -eq 0 ]; then
        emit OK "$item" "${now[*]}" "$REC_GOVERNOR" "-"
        return 0
    fi
    local fix="" c
    for c in "${bad[@]}"; do fix+="echo $REC_GOVERNOR > /sys/devices/system/cpu/cpu$c/cpufreq/scaling_governor; "; done
    emit WARN "$item" "${now[*]}" "$REC_GOVERNOR" "${fix%; }"
    if want_apply; then
        for c in "${bad[@]}"; do
            apply_file "$item" "/sys/devices/system/cpu/cpu$c/cpufreq/scaling_governor" "$REC_GOVERNOR" global
        done
    fi
}

check_cstates() {
    local item=cpu.cstates cpu st lat dis name seen=0 bad=() paths=()
    local rec="exit latency > ${REC_CSTATE_MAX_LATENCY_US}us disabled"
    for cpu in "${CPUS[@]}"; do
        for st in "$ROOT"/sys/devices/system/cpu/cpu"$cpu"/cpuidle/state[0-9]*; do
            [ -d "$st" ] || continue
            seen=1
            st=${st#"$ROOT"}
            lat=$(rd "$st/latency") || continue
            dis=$(rd "$st/disable") || dis=0
            name=$(rd "$st/name") || name=${st##*/}
            if [ "$lat" -gt "$REC_CSTATE_MAX_LATENCY_US" ] && [ "$dis" != 1 ]; then
                bad+=("cpu$cpu:$name")
                paths+=("$st/disable")
            fi
        done
    done
    if [ "$seen" = 0 ]; then
        emit N/A "$item" "no cpuidle states" "$rec" "-"
        return 0
    fi
    if [ ${#bad[@]} -eq 0 ]; then
        emit OK "$item" "deep states disabled" "$rec" "-"
        return 0
    fi
    local fix="" p
    for p in "${paths[@]}"; do fix+="echo 1 > $p; "; done
    emit WARN "$item" "enabled: ${bad[*]}" "$rec" "${fix%; }"
    if want_apply; then
        for p in "${paths[@]}"; do apply_file "$item" "$p" 1 global; done
    fi
}

check_smt() {
    local item=cpu.smt_siblings cpu sib list iso bad=() offl=() seen=0
    local rec="siblings idle or offline"
    iso=$(cmdline_cpus isolcpus) || iso=""
    for cpu in "${CPUS[@]}"; do
        list=$(rd "/sys/devices/system/cpu/cpu$cpu/topology/thread_siblings_list") || continue
        seen=1
        list=$(cpulist_expand "$list" 2> /dev/null) || continue
        for sib in $list; do
            [ "$sib" = "$cpu" ] && continue
            if list_has "${CPUS[*]}" "$sib"; then
                bad+=("cpu$cpu+poller$sib")
                offl+=("$sib")
            elif ! list_has "$iso" "$sib"; then
                bad+=("cpu$cpu+cpu$sib")
                offl+=("$sib")
            fi
        done
    done
    if [ "$seen" = 0 ]; then
        emit N/A "$item" "no CPU topology" "$rec" "-"
        return 0
    fi
    if [ ${#bad[@]} -eq 0 ]; then
        emit OK "$item" "no busy sibling" "$rec" "-"
        return 0
    fi
    local fix="(manual) " s
    for s in "${offl[@]}"; do fix+="echo 0 > /sys/devices/system/cpu/cpu$s/online; "; done
    emit WARN "$item" "shared: ${bad[*]}" "$rec" "${fix%; }"
    want_apply && manual "$item" "${fix%; }"
}

check_cpu() {
    check_cmdline_item isolcpus
    check_cmdline_item nohz_full
    check_cmdline_item rcu_nocbs
    check_governor
    check_cstates
    check_smt
}
