# shellcheck shell=bash
# firewall.sh: nftables and iptables rules that would drop Cohort's traffic (check only).
#
# Each base chain on the input, output, prerouting or ingress hook is read rule by rule, in
# order. Cohort needs: its UDP ports (udp/P, or "multicast" when no --ports is given) and IGMP
# (queries in, reports out; without them a snooping switch stops forwarding the group). A rule
# "covers" a need when it accepts it (an unconditional accept, a multicast/224.0.0.0/4 accept,
# an igmp accept, a dport accept); a drop/reject rule or a drop policy that hits a need not yet
# covered is a finding. A rule hits a need when it is unconditional, names multicast or
# 224.0.0.0/4, names igmp, or names one of the ports in a dport match. Heuristic by design: the
# finding quotes the rule so the admin can judge it.

# Chain records from `nft list ruleset` on stdin: "chain<TAB>NAME<TAB>HOOK", "rule<TAB>TEXT"...,
# "policy<TAB>accept|drop", "end".
nft_chains() {
    awk '
        { l = $0; gsub(/^[ \t]+|[ \t]+$/, "", l) }
        l ~ /^table / { split(l, a, " "); fam = a[2]; tbl = a[3]; next }
        l ~ /^chain / && l ~ /\{$/ { split(l, a, " "); ch = a[2]; inchain = 1; hook = ""; pol = "accept"; n = 0; next }
        inchain && l ~ /^type / && l ~ / hook / {
            m = split(l, a, /[ \t;]+/)
            for (i = 1; i < m; i++) if (a[i] == "hook") hook = a[i + 1]
            if (l ~ /policy drop/) pol = "drop"
            next
        }
        inchain && l == "}" {
            inchain = 0
            if ((fam == "ip" || fam == "inet" || fam == "netdev") && (hook == "input" || hook == "output" || hook == "prerouting" || hook == "ingress")) {
                print "chain\t" fam " " tbl " " ch "\t" hook
                for (i = 1; i <= n; i++) print "rule\t" r[i]
                print "policy\t" pol
                print "end"
            }
            next
        }
        inchain && l != "" { r[++n] = l }
    '
}

# Chain records from `iptables-save` on stdin (same format as nft_chains).
ipt_chains() {
    awk '
        /^\*/ { tbl = substr($0, 2); delete pol; delete rules; delete cnt; next }
        /^:(INPUT|OUTPUT|PREROUTING) / { c = substr($1, 2); pol[c] = tolower($2); next }
        /^-A (INPUT|OUTPUT|PREROUTING) / { c = $2; rules[c, ++cnt[c]] = $0; next }
        /^COMMIT/ {
            split("INPUT OUTPUT PREROUTING", cs, " ")
            for (k = 1; k <= 3; k++) {
                c = cs[k]
                if (!(c in pol)) continue
                print "chain\t" tbl " " c "\t" tolower(c)
                for (i = 1; i <= cnt[c]; i++) print "rule\t" rules[c, i]
                print "policy\t" pol[c]
                print "end"
            }
        }
    '
}

# Findings from chain records on stdin, one "NEED<TAB>CHAIN<TAB>BY" line each; PORTS (space
# separated) may be empty. The last line is "chains<TAB>N".
fw_findings() {
    awk -v ports="$1" '
        function need_list(   i, s) { s = ""; for (i = 1; i <= nneeds; i++) s = s " " needs[i]; return s }
        function port_hit(tok, p,   n, parts, i, lo, hi, rng) {
            n = split(tok, parts, ",")
            for (i = 1; i <= n; i++) {
                if (parts[i] == "") continue
                if (parts[i] ~ /^[0-9]+[-:][0-9]+$/) { split(parts[i], rng, /[-:]/); lo = rng[1] + 0; hi = rng[2] + 0 }
                else if (parts[i] ~ /^[0-9]+$/) { lo = parts[i] + 0; hi = lo }
                else continue
                if (p >= lo && p <= hi) return 1
            }
            return 0
        }
        # hits[] gets the needs this rule text names; returns "accept", "drop" or "".
        function classify(text,   t, n, i, j, verdict, vpos, rest, k, dtok, p) {
            delete hits
            n = split(text, t, /[ \t]+/)
            verdict = ""; vpos = n + 1
            for (i = 1; i <= n; i++) {
                if (t[i] == "-j" && i < n) {
                    if (t[i + 1] == "ACCEPT") verdict = "accept"
                    else if (t[i + 1] == "DROP" || t[i + 1] == "REJECT") verdict = "drop"
                    vpos = i; break
                }
                if (t[i] == "accept") { verdict = "accept"; vpos = i; break }
                if (t[i] == "drop" || t[i] == "reject") { verdict = "drop"; vpos = i; break }
            }
            if (verdict == "") return ""
            rest = 0
            for (i = (t[1] == "-A" ? 3 : 1); i < vpos; i++) {
                if (t[i] == "counter" || t[i] == "packets" || t[i] == "bytes" || t[i] ~ /^[0-9]+$/) continue
                rest++
            }
            if (rest == 0) { for (k = 1; k <= nneeds; k++) hits[needs[k]] = 1; return verdict }
            if (text ~ /multicast/ || text ~ /224\.0\.0\.0\/4/) { hits["multicast"] = 1; hits["igmp"] = 1 }
            if (text ~ /(^|[ \t])igmp([ \t]|$)/) hits["igmp"] = 1
            for (i = 1; i < vpos; i++) {
                if (t[i] != "dport" && t[i] != "--dport" && t[i] != "--dports" && t[i] != "--destination-port" && t[i] != "--destination-ports") continue
                dtok = ""
                if (t[i + 1] == "{") { for (j = i + 2; j <= n && t[j] != "}"; j++) dtok = dtok "," t[j] }
                else dtok = t[i + 1]
                for (k = 1; k <= nneeds; k++) {
                    if (needs[k] !~ /^udp\//) continue
                    p = substr(needs[k], 5) + 0
                    if (port_hit(dtok, p)) hits[needs[k]] = 1
                }
            }
            return verdict
        }
        BEGIN {
            FS = "\t"; nneeds = 0
            np = split(ports, pl, " ")
            if (np == 0) needs[++nneeds] = "multicast"
            for (i = 1; i <= np; i++) needs[++nneeds] = "udp/" pl[i]
            needs[++nneeds] = "igmp"
        }
        $1 == "chain" { chain = $2; chains++; delete covered; delete found; next }
        $1 == "rule" {
            v = classify($2)
            if (v == "") next
            for (k = 1; k <= nneeds; k++) {
                nd = needs[k]
                if (!(nd in hits)) continue
                if (v == "accept") covered[nd] = 1
                else if (!(nd in covered) && !(nd in found)) { found[nd] = 1; print nd "\t" chain "\t" $2 }
            }
            next
        }
        $1 == "policy" && $2 == "drop" {
            for (k = 1; k <= nneeds; k++) {
                nd = needs[k]
                if (!(nd in covered) && !(nd in found)) { found[nd] = 1; print nd "\t" chain "\tpolicy drop" }
            }
        }
        END { print "chains\t" chains + 0 }
    '
}

# fw_fix STYLE CHAIN NEED: the command that accepts NEED in CHAIN.
fw_fix() {
    local style=$1 chain=$2 need=$3
    local -a c
    read -r -a c <<< "$chain"
    if [ "$style" = nft ]; then
        case $need in
            multicast) printf 'nft insert rule %s %s %s meta pkttype multicast accept' "${c[0]}" "${c[1]}" "${c[2]}" ;;
            igmp) printf 'nft insert rule %s %s %s meta l4proto igmp accept' "${c[0]}" "${c[1]}" "${c[2]}" ;;
            udp/*) printf 'nft insert rule %s %s %s udp dport %s accept' "${c[0]}" "${c[1]}" "${c[2]}" "${need#udp/}" ;;
        esac
    else
        case $need in
            multicast) printf 'iptables -t %s -I %s -m pkttype --pkt-type multicast -j ACCEPT' "${c[0]}" "${c[1]}" ;;
            igmp) printf 'iptables -t %s -I %s -p igmp -j ACCEPT' "${c[0]}" "${c[1]}" ;;
            udp/*) printf 'iptables -t %s -I %s -p udp --dport %s -j ACCEPT' "${c[0]}" "${c[1]}" "${need#udp/}" ;;
        esac
    fi
}

# fw_item ITEM STYLE TOOL ARGS...: run the listing tool and report its findings.
fw_item() {
    local item=$1 style=$2 tool=$3 out findings chains need chain by cur="" fix=""
    shift 3
    local rec="no drop of udp ports, multicast, igmp"
    if ! command -v "$tool" > /dev/null 2>&1; then
        emit N/A "$item" "$tool not installed" "$rec" "-"
        return 0
    fi
    if ! out=$("$tool" "$@" 2>&1); then
        emit N/A "$item" "$tool failed: $(printf '%s' "$out" | head -n 1)" "$rec" "-"
        return 0
    fi
    if [ "$style" = nft ]; then
        findings=$(printf '%s\n' "$out" | nft_chains | fw_findings "${PORTS[*]:-}")
    else
        findings=$(printf '%s\n' "$out" | ipt_chains | fw_findings "${PORTS[*]:-}")
    fi
    chains=$(printf '%s\n' "$findings" | awk -F '\t' '$1 == "chains" { print $2 }')
    while IFS=$'\t' read -r need chain by; do
        [ "$need" = chains ] && continue
        [ -n "$need" ] || continue
        cur+="$need by $chain ($by); "
        fix+="$(fw_fix "$style" "$chain" "$need"); "
    done <<< "$findings"
    if [ -z "$cur" ]; then
        emit OK "$item" "$chains chain(s), no drop" "$rec" "-"
        return 0
    fi
    emit FAIL "$item" "dropped: ${cur%; }" "$rec" "(manual) ${fix%; }"
    want_apply && manual "$item" "${fix%; }"
}

check_firewall() {
    fw_item fw.nftables nft nft list ruleset
    fw_item fw.iptables ipt iptables-save
}
