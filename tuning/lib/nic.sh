# shellcheck shell=bash
# nic.sh: queue count, RSS spread, interrupt coalescing, ring sizes, IRQ affinity, irqbalance.
# ethtool reads and changes the NIC; where it is absent or the driver lacks a feature the item
# is N/A and apply goes on.

# ethtool_field TEXT SECTION KEY: value of "KEY:" after the line starting SECTION ("" = any).
ethtool_field() {
    printf '%s\n' "$1" | awk -v sec="$2" -v key="$3" '
        sec != "" && index($0, sec) == 1 { insec = 1; next }
        /^(Pre-set maximums|Current hardware settings)/ { insec = 0 }
        (sec == "" || insec) {
            line = $0; sub(/^[ \t]+/, "", line)
            if (index(line, key ":") == 1) { v = substr(line, length(key) + 2); gsub(/^[ \t]+|[ \t]+$/, "", v); print v; exit }
        }'
}

is_num() { [[ $1 =~ ^[0-9]+$ ]]; }

# Compress "0 1 2 5" to "0-2,5".
ranges() {
    local out="" start="" prev="" x
    for x in $1; do
        if [ -n "$prev" ] && [ "$x" -eq $((prev + 1)) ]; then prev=$x; continue; fi
        [ -n "$start" ] && { [ "$start" = "$prev" ] && out+="$start," || out+="$start-$prev,"; }
        start=$x; prev=$x
    done
    [ -n "$start" ] && { [ "$start" = "$prev" ] && out+="$start" || out+="$start-$prev"; }
    printf '%s' "$out"
}

nic_na_reason() {
    if [ -z "$IFACE" ]; then printf 'no interface (use --iface)'; return 0; fi
    if ! command -v ethtool > /dev/null 2>&1; then printf 'ethtool not installed'; return 0; fi
    return 1
}

# apply_ethtool ITEM FLAG BACKUP_ARGS NEW_ARGS (word-split on purpose)
apply_ethtool() {
    local item=$1 flag=$2 old=$3 new=$4 err
    if ! backup_add "ethtool-$flag" "$IFACE" "$old"; then
        cannot "$item" "no backup possible in $STATE_DIR, not changing"
        return 0
    fi
    # shellcheck disable=SC2086
    if ! err=$(ethtool "-$flag" "$IFACE" $new 2>&1); then
        backup_undo
        cannot "$item" "ethtool -$flag $IFACE $new failed: ${err//$'\n'/ }"
        return 0
    fi
    N_CHANGED=$((N_CHANGED + 1))
    say CHANGED "$item" "$old -> $new" "$REVERT_HINT"
}

check_channels() {
    local item=nic.channels out why mc mr mt cc cr ct want cur rec fix kind n
    if why=$(nic_na_reason); then emit N/A "$item" "$why" "$POLLERS queue(s)" "-"; return 0; fi
    if ! out=$(ethtool -l "$IFACE" 2>&1); then
        emit N/A "$item" "not supported by $IFACE" "$POLLERS queue(s)" "-"; return 0
    fi
    mc=$(ethtool_field "$out" "Pre-set maximums" Combined); mr=$(ethtool_field "$out" "Pre-set maximums" RX)
    mt=$(ethtool_field "$out" "Pre-set maximums" TX)
    cc=$(ethtool_field "$out" "Current hardware settings" Combined); cr=$(ethtool_field "$out" "Current hardware settings" RX)
    ct=$(ethtool_field "$out" "Current hardware settings" TX)
    if is_num "$mc" && [ "$mc" -gt 0 ]; then
        kind=combined; n=$POLLERS; [ "$n" -le "$mc" ] || n=$mc
        cur="combined ${cc:-0}"; rec="combined $n"; want="combined $n"
    elif is_num "$mr" && [ "$mr" -gt 0 ]; then
        kind=rx; n=$POLLERS; [ "$n" -le "$mr" ] || n=$mr
        cur="rx ${cr:-0}"; rec="rx $n"; want="rx $n"
        if is_num "$mt" && [ "$mt" -gt 0 ]; then
            local nt=$n; [ "$nt" -le "$mt" ] || nt=$mt
            cur="$cur tx ${ct:-0}"; rec="$rec tx $nt"; want="$want tx $nt"
        fi
    else
        emit N/A "$item" "no queue counts on $IFACE" "$POLLERS queue(s)" "-"; return 0
    fi
    if [ "$cur" = "$rec" ]; then
        emit OK "$item" "$cur" "$rec" "-"
    else
        fix="ethtool -L $IFACE $want"
        emit WARN "$item" "$cur" "$rec" "$fix"
        want_apply && apply_ethtool "$item" L "$cur" "$want"
    fi
    : "$kind"
}

check_rss() {
    local item=nic.rss out why used rec_set n q old
    if why=$(nic_na_reason); then emit N/A "$item" "$why" "queues 0-$((POLLERS - 1))" "-"; return 0; fi
    out=$(ethtool -x "$IFACE" 2>&1)
    used=$(printf '%s\n' "$out" | awk '/^[ \t]*[0-9]+:/ { for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+$/) print $i }' | sort -n -u | tr '\n' ' ')
    used=${used% }
    if [ -z "$used" ]; then
        emit N/A "$item" "no RSS table on $IFACE" "queues 0-$((POLLERS - 1))" "-"; return 0
    fi
    n=$(printf '%s\n' "$out" | sed -n 's/.* with \([0-9][0-9]*\) RX ring.*/\1/p' | head -n 1)
    is_num "$n" || n=$POLLERS
    [ "$POLLERS" -le "$n" ] && n=$POLLERS
    rec_set=""
    for ((q = 0; q < n; q++)); do rec_set+="$q "; done
    rec_set=${rec_set% }
    if [ "$used" = "$rec_set" ]; then
        emit OK "$item" "queues $(ranges "$used")" "queues $(ranges "$rec_set")" "-"
    else
        emit WARN "$item" "queues $(ranges "$used")" "queues $(ranges "$rec_set")" "ethtool -X $IFACE equal $n"
        old=default
        local k=0 expect=""
        for q in $used; do expect+="$k "; k=$((k + 1)); done
        [ "$used" = "${expect% }" ] && old="equal $k"
        want_apply && apply_ethtool "$item" X "$old" "equal $n"
    fi
}

check_coalesce() {
    local item=nic.coalesce out why arx usecs cur ok=1 old="" new=""
    local rec="adaptive-rx off, rx-usecs <= $REC_RX_USECS"
    if why=$(nic_na_reason); then emit N/A "$item" "$why" "$rec" "-"; return 0; fi
    if ! out=$(ethtool -c "$IFACE" 2>&1); then
        emit N/A "$item" "not supported by $IFACE" "$rec" "-"; return 0
    fi
    arx=$(printf '%s\n' "$out" | sed -n 's/^Adaptive RX: *\([a-z/]*\).*/\1/p' | head -n 1)
    usecs=$(ethtool_field "$out" "" rx-usecs)
    if { [ -z "$arx" ] || [ "$arx" = n/a ]; } && ! is_num "$usecs"; then
        emit N/A "$item" "not supported by $IFACE" "$rec" "-"; return 0
    fi
    cur="adaptive-rx ${arx:-n/a} rx-usecs ${usecs:-n/a}"
    if [ "$arx" = on ]; then ok=0; fi
    if is_num "$usecs" && [ "$usecs" -gt "$REC_RX_USECS" ]; then ok=0; fi
    if [ "$ok" = 1 ]; then
        emit OK "$item" "$cur" "$rec" "-"
        return 0
    fi
    if [ "$arx" = on ] || [ "$arx" = off ]; then old="adaptive-rx $arx"; new="adaptive-rx off"; fi
    if is_num "$usecs"; then old="$old rx-usecs $usecs"; new="$new rx-usecs $REC_RX_USECS"; fi
    old=${old# }; new=${new# }
    emit WARN "$item" "$cur" "$rec" "ethtool -C $IFACE $new"
    want_apply && apply_ethtool "$item" C "$old" "$new"
}

check_rings() {
    local item=nic.rings out why max cur
    if why=$(nic_na_reason); then emit N/A "$item" "$why" "rx = pre-set max" "-"; return 0; fi
    if ! out=$(ethtool -g "$IFACE" 2>&1); then
        emit N/A "$item" "not supported by $IFACE" "rx = pre-set max" "-"; return 0
    fi
    max=$(ethtool_field "$out" "Pre-set maximums" RX)
    cur=$(ethtool_field "$out" "Current hardware settings" RX)
    if ! is_num "$max" || ! is_num "$cur"; then
        emit N/A "$item" "no RX ring size on $IFACE" "rx = pre-set max" "-"; return 0
    fi
    if [ "$cur" -ge "$max" ]; then
        emit OK "$item" "rx $cur" "rx $max" "-"
    else
        emit WARN "$item" "rx $cur" "rx $max" "ethtool -G $IFACE rx $max"
        want_apply && apply_ethtool "$item" G "rx $cur" "rx $max"
    fi
}

# Queue IRQs of IFACE, one "IRQ QUEUE" line each: IRQs of the NIC's PCI device (msi_irqs) or
# named after the interface, whose action name says rx/tx/input/output/comp/TxRx.
nic_queue_irqs() {
    local dev msi="" irq name q
    dev=$ROOT/sys/class/net/$IFACE/device
    if [ -d "$dev/msi_irqs" ]; then msi=$(ls "$dev/msi_irqs" 2> /dev/null)
    elif [ -d "$dev/../msi_irqs" ]; then msi=$(ls "$dev/../msi_irqs" 2> /dev/null); fi
    msi=" $(printf '%s' "$msi" | tr '\n' ' ') "
    awk 'NR > 1 && $1 ~ /^[0-9]+:$/ { sub(/:$/, "", $1); print $1, $NF }' "$ROOT/proc/interrupts" 2> /dev/null |
        while read -r irq name; do
            case $msi in *" $irq "*) ;; *) case $name in *"$IFACE"*) ;; *) continue ;; esac ;; esac
            shopt -s nocasematch
            if [[ $name =~ (config|event|async|ctrl) ]] || [[ ! $name =~ (rx|tx|input|output|comp|queue) ]]; then
                shopt -u nocasematch; continue
            fi
            shopt -u nocasematch
            q=${name%%@*}
            [[ $q =~ ([0-9]+)[^0-9]*$ ]] && q=${BASH_REMATCH[1]} || q=0
            printf '%s %s\n' "$irq" "$((10#$q))"
        done
}

check_irq_affinity() {
    local item=irq.affinity irqs irq q want cur bad=() fixes=() total=0
    local rec="queue i -> cpu of poller i mod $POLLERS"
    if [ -z "$IFACE" ]; then emit N/A "$item" "no interface (use --iface)" "$rec" "-"; return 0; fi
    irqs=$(nic_queue_irqs)
    if [ -z "$irqs" ]; then
        emit N/A "$item" "no queue IRQs for $IFACE" "$rec" "-"; return 0
    fi
    while read -r irq q; do
        total=$((total + 1))
        want=${CPUS[q % POLLERS]}
        cur=$(rd "/proc/irq/$irq/smp_affinity_list") || cur=unreadable
        if [ "$(cpulist_expand "$cur" 2> /dev/null)" != "$want" ]; then
            bad+=("$irq:$cur->$want")
            fixes+=("$irq $want")
        fi
    done <<< "$irqs"
    if [ ${#bad[@]} -eq 0 ]; then
        emit OK "$item" "$total IRQs on poller CPUs" "$rec" "-"
        return 0
    fi
    local fixcmd="" f
    for f in "${fixes[@]}"; do fixcmd+="echo ${f#* } > /proc/irq/${f%% *}/smp_affinity_list; "; done
    emit WARN "$item" "${#bad[@]}/$total misplaced: ${bad[*]}" "$rec" "${fixcmd%; }"
    if want_apply; then
        for f in "${fixes[@]}"; do
            apply_file "$item" "/proc/irq/${f%% *}/smp_affinity_list" "${f#* }" global
        done
    fi
}

irqbalance_running() {
    local c
    for c in "$ROOT"/proc/[0-9]*/comm; do
        [ "$(cat "$c" 2> /dev/null)" = irqbalance ] && return 0
    done
    return 1
}

check_irqbalance() {
    local item=irq.irqbalance banned="" f cpu all=1
    local rec="stopped, or poller CPUs banned"
    if ! irqbalance_running; then
        emit OK "$item" "not running" "$rec" "-"
        return 0
    fi
    for f in /etc/default/irqbalance /etc/sysconfig/irqbalance; do
        [ -r "$ROOT$f" ] || continue
        banned=$(sed -n 's/^[ \t]*IRQBALANCE_BANNED_CPULIST=["'\'']*\([0-9,-]*\).*/\1/p' "$ROOT$f" | tail -n 1)
        [ -n "$banned" ] && break
    done
    banned=$(cpulist_expand "$banned" 2> /dev/null) || banned=""
    for cpu in "${CPUS[@]}"; do list_has "$banned" "$cpu" || all=0; done
    if [ -n "$banned" ] && [ "$all" = 1 ]; then
        emit OK "$item" "running, pollers banned" "$rec" "-"
        return 0
    fi
    emit WARN "$item" "running" "$rec" "systemctl stop irqbalance"
    if want_apply; then
        if in_child_netns; then cannot "$item" "host-wide setting, not changed from inside a network namespace"; return 0; fi
        backup_add service irqbalance active || { cannot "$item" "no backup possible in $STATE_DIR"; return 0; }
        local err
        if err=$(service_ctl stop irqbalance 2>&1); then
            N_CHANGED=$((N_CHANGED + 1)); say CHANGED "$item" "running -> stopped" "$REVERT_HINT"
        else
            backup_undo; cannot "$item" "stopping irqbalance failed: ${err//$'\n'/ }"
        fi
    fi
}

check_nic() {
    check_channels
    check_rss
    check_coalesce
    check_rings
    check_irq_affinity
    check_irqbalance
}
