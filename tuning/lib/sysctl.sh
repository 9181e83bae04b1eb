# shellcheck shell=bash
# sysctl.sh: socket buffers, backlog, UDP memory, multicast memberships, reverse-path filter.

# sysctl_min KEY RECOMMENDED SEVERITY SCOPE: a numeric sysctl that should be at least RECOMMENDED.
sysctl_min() {
    local key=$1 rec=$2 sev=$3 scope=$4 path cur
    path=$(sysctl_path "$key")
    if ! cur=$(rd "$path"); then
        if in_child_netns && [ "$scope" = net ]; then
            emit N/A "$key" "absent in this netns" ">= $rec" "set it in the host namespace"
        else
            emit N/A "$key" "absent on this kernel" ">= $rec" "-"
        fi
        return 0
    fi
    if [[ ! $cur =~ ^[0-9]+$ ]]; then
        emit N/A "$key" "unreadable: $cur" ">= $rec" "-"
        return 0
    fi
    if [ "$cur" -ge "$rec" ]; then
        emit OK "$key" "$cur" ">= $rec" "-"
    else
        emit "$sev" "$key" "$cur" ">= $rec" "sysctl -w $key=$rec"
        want_apply && apply_file "$key" "$path" "$rec" "$scope"
    fi
    return 0
}

check_udp_mem() {
    local key=net.ipv4.udp_mem path cur c r i ok=1 want=()
    path=$(sysctl_path "$key")
    if ! cur=$(rd "$path"); then
        emit N/A "$key" "absent in this netns" ">= $REC_UDP_MEM" "set it in the host namespace"
        return 0
    fi
    read -r -a c <<< "$cur"
    read -r -a r <<< "$REC_UDP_MEM"
    for i in 0 1 2; do
        if [ "${c[i]:-0}" -lt "${r[i]}" ]; then ok=0; want+=("${r[i]}"); else want+=("${c[i]}"); fi
    done
    if [ "$ok" = 1 ]; then
        emit OK "$key" "$cur" ">= $REC_UDP_MEM" "-"
    else
        emit WARN "$key" "$cur" ">= $REC_UDP_MEM" "sysctl -w $key='${want[*]}'"
        want_apply && apply_file "$key" "$path" "${want[*]}" net
    fi
}

# rp_filter_item KEY PATH: 0 (off) and 2 (loose) keep multicast from any source; 1 (strict) drops it
# when the source is not routed back through this interface.
rp_filter_item() {
    local key=$1 path=$2 cur
    if ! cur=$(rd "$path"); then
        emit N/A "$key" "absent" "0 or $REC_RP_FILTER" "-"
        return 0
    fi
    if [ "$cur" = 0 ] || [ "$cur" = 2 ]; then
        emit OK "$key" "$cur" "0 or $REC_RP_FILTER" "-"
    else
        emit WARN "$key" "$cur" "0 or $REC_RP_FILTER" "sysctl -w $key=$REC_RP_FILTER"
        want_apply && apply_file "$key" "$path" "$REC_RP_FILTER" net
    fi
}

check_sysctl() {
    sysctl_min net.core.rmem_max "$REC_RMEM_MAX" FAIL net
    sysctl_min net.core.wmem_max "$REC_WMEM_MAX" FAIL net
    sysctl_min net.core.rmem_default "$REC_RMEM_DEFAULT" WARN net
    sysctl_min net.core.wmem_default "$REC_WMEM_DEFAULT" WARN net
    sysctl_min net.core.netdev_max_backlog "$REC_NETDEV_MAX_BACKLOG" WARN net
    check_udp_mem
    sysctl_min net.core.optmem_max "$REC_OPTMEM_MAX" WARN net
    sysctl_min net.ipv4.igmp_max_memberships "$REC_IGMP_MAX_MEMBERSHIPS" WARN net
    rp_filter_item net.ipv4.conf.all.rp_filter /proc/sys/net/ipv4/conf/all/rp_filter
    if [ -n "$IFACE" ]; then
        rp_filter_item "net.ipv4.conf.$IFACE.rp_filter" "/proc/sys/net/ipv4/conf/$IFACE/rp_filter"
    fi
}
