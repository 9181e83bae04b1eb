# shellcheck shell=bash
# busypoll.sh: busy polling sysctls, SO_BUSY_POLL permission, NAPI IRQ deferral.

# True when this process has CAP_NET_ADMIN (bit 12 of CapEff).
has_cap_net_admin() {
    local hex
    hex=$(awk '$1 == "CapEff:" { print $2 }' "$ROOT/proc/self/status" 2> /dev/null)
    [ -n "$hex" ] && [ $((16#$hex & 0x1000)) -ne 0 ]
}

check_so_busy_poll() {
    local item=busy.so_busy_poll rec cur cap=no
    rec=">= $REC_BUSY_READ_US or CAP_NET_ADMIN"
    has_cap_net_admin && cap=yes
    if ! cur=$(rd /proc/sys/net/core/busy_read); then
        emit N/A "$item" "busy_read absent (netns)" "$rec" "set net.core.busy_read in the host namespace"
        return 0
    fi
    if [ "$cur" -ge "$REC_BUSY_READ_US" ] || [ "$cap" = yes ]; then
        emit OK "$item" "busy_read=$cur cap=$cap" "$rec" "-"
    else
        emit WARN "$item" "busy_read=$cur cap=$cap" "$rec" "sysctl -w net.core.busy_read=$REC_BUSY_READ_US"
    fi
}

# napi_item NAME RECOMMENDED: /sys/class/net/IF/NAME should be at least RECOMMENDED.
napi_item() {
    local name=$1 rec=$2 item path cur
    item=napi.$name
    if [ -z "$IFACE" ]; then
        emit N/A "$item" "no interface (use --iface)" ">= $rec" "-"
        return 0
    fi
    path=/sys/class/net/$IFACE/$name
    if ! cur=$(rd "$path"); then
        emit N/A "$item" "not supported by $IFACE" ">= $rec" "-"
        return 0
    fi
    if [ "$cur" -ge "$rec" ]; then
        emit OK "$item" "$cur" ">= $rec" "-"
    else
        emit WARN "$item" "$cur" ">= $rec" "echo $rec > $path"
        want_apply && apply_file "$item" "$path" "$rec" net
    fi
}

check_busypoll() {
    sysctl_min net.core.busy_poll "$REC_BUSY_POLL_US" WARN net
    sysctl_min net.core.busy_read "$REC_BUSY_READ_US" WARN net
    check_so_busy_poll
    napi_item napi_defer_hard_irqs "$REC_NAPI_DEFER_HARD_IRQS"
    napi_item gro_flush_timeout "$REC_GRO_FLUSH_TIMEOUT_NS"
}
