//! Firewall rules that would drop Cohort's traffic, from `nft list ruleset` and
//! `iptables-save`. Same heuristic as `tuning/lib/firewall.sh`:
//!
//! Each base chain on the input, output, prerouting or ingress hook is read rule by rule, in
//! order. Cohort needs its UDP ports (`udp/P`, or `multicast` when no ports are configured)
//! and IGMP. A rule *covers* a need when it accepts it; a drop/reject rule or a drop policy
//! that hits a need not yet covered is a finding. A rule hits a need when it is unconditional,
//! names multicast or 224.0.0.0/4 (multicast and igmp), names igmp, or names one of the ports
//! in a dport match. The finding quotes the rule so the admin can judge it.

use super::checks::Ctx;
use super::host::ToolOutput;
use super::report::Verdict;

/// One base chain, its rules in order and its policy.
#[derive(Debug, Default, PartialEq)]
pub struct Chain {
    /// "family table chain" (nft) or "table CHAIN" (iptables).
    pub name: String,
    pub rules: Vec<String>,
    pub policy_drop: bool,
}

/// A need that a rule or policy drops.
#[derive(Debug, PartialEq)]
pub struct Finding {
    pub need: String,
    pub chain: String,
    pub by: String,
}

const HOOKS: [&str; 4] = ["input", "output", "prerouting", "ingress"];

/// Base chains from `nft list ruleset`.
pub fn nft_chains(text: &str) -> Vec<Chain> {
    let mut out = Vec::new();
    let (mut fam, mut tbl) = (String::new(), String::new());
    let mut cur: Option<(Chain, String)> = None;
    for raw in text.lines() {
        let l = raw.trim_matches([' ', '\t']);
        if l.starts_with("table ") {
            let w: Vec<&str> = l.split_whitespace().collect();
            fam = w.get(1).unwrap_or(&"").to_string();
            tbl = w.get(2).unwrap_or(&"").to_string();
            continue;
        }
        if l.starts_with("chain ") && l.ends_with('{') {
            let w: Vec<&str> = l.split_whitespace().collect();
            let chain = Chain {
                name: w.get(1).unwrap_or(&"").to_string(),
                ..Chain::default()
            };
            cur = Some((chain, String::new()));
            continue;
        }
        let Some((chain, hook)) = cur.as_mut() else {
            continue;
        };
        if l.starts_with("type ") && l.contains(" hook ") {
            let w: Vec<&str> = l
                .split([' ', '\t', ';'])
                .filter(|s| !s.is_empty())
                .collect();
            if let Some(p) = w.iter().position(|x| *x == "hook") {
                *hook = w.get(p + 1).unwrap_or(&"").to_string();
            }
            if l.contains("policy drop") {
                chain.policy_drop = true;
            }
            continue;
        }
        if l == "}" {
            if let Some((mut chain, hook)) = cur.take() {
                if ["ip", "inet", "netdev"].contains(&fam.as_str())
                    && HOOKS.contains(&hook.as_str())
                {
                    chain.name = format!("{fam} {tbl} {}", chain.name);
                    out.push(chain);
                }
            }
            continue;
        }
        if !l.is_empty() {
            chain.rules.push(l.to_string());
        }
    }
    out
}

/// Built-in INPUT/OUTPUT/PREROUTING chains from `iptables-save`.
pub fn ipt_chains(text: &str) -> Vec<Chain> {
    const CHAINS: [&str; 3] = ["INPUT", "OUTPUT", "PREROUTING"];
    let mut out = Vec::new();
    let mut tbl = String::new();
    let mut policy: Vec<(String, bool)> = Vec::new();
    let mut rules: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(t) = line.strip_prefix('*') {
            tbl = t.to_string();
            policy.clear();
            rules.clear();
        } else if let Some(rest) = line.strip_prefix(':') {
            let w: Vec<&str> = rest.split_whitespace().collect();
            if let (Some(c), Some(p)) = (w.first(), w.get(1)) {
                if CHAINS.contains(c) {
                    policy.push((c.to_string(), p.eq_ignore_ascii_case("drop")));
                }
            }
        } else if line.starts_with("-A ") {
            let c = line.split_whitespace().nth(1).unwrap_or("");
            if CHAINS.contains(&c) {
                rules.push((c.to_string(), line.to_string()));
            }
        } else if line.starts_with("COMMIT") {
            for c in CHAINS {
                let Some((_, drop)) = policy.iter().find(|(p, _)| p == c) else {
                    continue;
                };
                out.push(Chain {
                    name: format!("{tbl} {c}"),
                    rules: rules
                        .iter()
                        .filter(|(rc, _)| rc == c)
                        .map(|(_, r)| r.clone())
                        .collect(),
                    policy_drop: *drop,
                });
            }
        }
    }
    out
}

#[derive(PartialEq)]
enum RuleVerdict {
    Accept,
    Drop,
}

fn port_hit(expr: &str, port: u16) -> bool {
    expr.split(',').filter(|p| !p.is_empty()).any(|part| {
        let range = part
            .split_once(['-', ':'])
            .filter(|(a, b)| is_digits(a) && is_digits(b));
        let (lo, hi) = match range {
            Some((a, b)) => (
                a.parse::<u64>().unwrap_or(u64::MAX),
                b.parse::<u64>().unwrap_or(0),
            ),
            None if is_digits(part) => {
                let v = part.parse::<u64>().unwrap_or(u64::MAX);
                (v, v)
            }
            None => return false,
        };
        (lo..=hi).contains(&u64::from(port))
    })
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// The rule's verdict and the needs it names.
fn classify(text: &str, needs: &[String]) -> Option<(RuleVerdict, Vec<String>)> {
    let t: Vec<&str> = text.split([' ', '\t']).collect();
    let mut verdict = None;
    let mut vpos = t.len();
    for (i, w) in t.iter().enumerate() {
        if *w == "-j" && i + 1 < t.len() {
            verdict = match t[i + 1] {
                "ACCEPT" => Some(RuleVerdict::Accept),
                "DROP" | "REJECT" => Some(RuleVerdict::Drop),
                _ => None,
            };
            vpos = i;
            break;
        }
        match *w {
            "accept" => verdict = Some(RuleVerdict::Accept),
            "drop" | "reject" => verdict = Some(RuleVerdict::Drop),
            _ => continue,
        }
        vpos = i;
        break;
    }
    let verdict = verdict?;
    let start = if t.first() == Some(&"-A") { 2 } else { 0 };
    let conditions = t
        .iter()
        .take(vpos)
        .skip(start)
        .filter(|w| !matches!(**w, "counter" | "packets" | "bytes") && !is_digits(w))
        .count();
    if conditions == 0 {
        return Some((verdict, needs.to_vec()));
    }
    let mut hits: Vec<String> = Vec::new();
    if text.contains("multicast") || text.contains("224.0.0.0/4") {
        hits.push("multicast".into());
        hits.push("igmp".into());
    }
    if t.contains(&"igmp") {
        hits.push("igmp".into());
    }
    for i in 0..vpos {
        if !matches!(
            t[i],
            "dport" | "--dport" | "--dports" | "--destination-port" | "--destination-ports"
        ) {
            continue;
        }
        let expr = if t.get(i + 1) == Some(&"{") {
            t.iter()
                .skip(i + 2)
                .take_while(|w| **w != "}")
                .fold(String::new(), |acc, w| acc + "," + w)
        } else {
            t.get(i + 1).unwrap_or(&"").to_string()
        };
        for need in needs {
            if let Some(port) = need
                .strip_prefix("udp/")
                .and_then(|p| p.parse::<u16>().ok())
            {
                if port_hit(&expr, port) {
                    hits.push(need.clone());
                }
            }
        }
    }
    Some((verdict, hits))
}

/// What Cohort needs through the firewall, in report order.
pub fn needs(ports: &[u16]) -> Vec<String> {
    let mut v = Vec::new();
    if ports.is_empty() {
        v.push("multicast".to_string());
    }
    v.extend(ports.iter().map(|p| format!("udp/{p}")));
    v.push("igmp".to_string());
    v
}

pub fn findings(chains: &[Chain], ports: &[u16]) -> Vec<Finding> {
    let needs = needs(ports);
    let mut out = Vec::new();
    for chain in chains {
        let mut covered: Vec<&str> = Vec::new();
        let mut found: Vec<&str> = Vec::new();
        for rule in &chain.rules {
            let Some((verdict, hits)) = classify(rule, &needs) else {
                continue;
            };
            for need in &needs {
                if !hits.contains(need) {
                    continue;
                }
                if verdict == RuleVerdict::Accept {
                    covered.push(need);
                } else if !covered.contains(&need.as_str()) && !found.contains(&need.as_str()) {
                    found.push(need);
                    out.push(Finding {
                        need: need.clone(),
                        chain: chain.name.clone(),
                        by: rule.clone(),
                    });
                }
            }
        }
        if chain.policy_drop {
            for need in &needs {
                if !covered.contains(&need.as_str()) && !found.contains(&need.as_str()) {
                    found.push(need);
                    out.push(Finding {
                        need: need.clone(),
                        chain: chain.name.clone(),
                        by: "policy drop".into(),
                    });
                }
            }
        }
    }
    out
}

/// The command that accepts a need in a chain.
fn fix(nft: bool, f: &Finding) -> String {
    let c: Vec<&str> = f.chain.split(' ').collect();
    let g = |i: usize| c.get(i).copied().unwrap_or("");
    let port = f.need.strip_prefix("udp/");
    if nft {
        match (f.need.as_str(), port) {
            ("multicast", _) => format!(
                "nft insert rule {} {} {} meta pkttype multicast accept",
                g(0),
                g(1),
                g(2)
            ),
            ("igmp", _) => format!(
                "nft insert rule {} {} {} meta l4proto igmp accept",
                g(0),
                g(1),
                g(2)
            ),
            (_, Some(p)) => format!(
                "nft insert rule {} {} {} udp dport {p} accept",
                g(0),
                g(1),
                g(2)
            ),
            _ => String::new(),
        }
    } else {
        match (f.need.as_str(), port) {
            ("multicast", _) => format!(
                "iptables -t {} -I {} -m pkttype --pkt-type multicast -j ACCEPT",
                g(0),
                g(1)
            ),
            ("igmp", _) => format!("iptables -t {} -I {} -p igmp -j ACCEPT", g(0), g(1)),
            (_, Some(p)) => format!(
                "iptables -t {} -I {} -p udp --dport {p} -j ACCEPT",
                g(0),
                g(1)
            ),
            _ => String::new(),
        }
    }
}

fn fw_item(ctx: &mut Ctx, item: &str, nft: bool, tool: &str, args: &[&str]) {
    let rec = "no drop of udp ports, multicast, igmp";
    let text = match ctx.host.run(tool, args) {
        ToolOutput::NotInstalled => {
            return ctx.emit(
                Verdict::NotApplicable,
                item,
                &format!("{tool} not installed"),
                rec,
                "-",
            );
        }
        ToolOutput::Failed(first) => {
            return ctx.emit(
                Verdict::NotApplicable,
                item,
                &format!("{tool} failed: {first}"),
                rec,
                "-",
            );
        }
        ToolOutput::Ok(text) => text,
    };
    let chains = if nft {
        nft_chains(&text)
    } else {
        ipt_chains(&text)
    };
    let found = findings(&chains, &ctx.ports);
    if found.is_empty() {
        return ctx.emit(
            Verdict::Ok,
            item,
            &format!("{} chain(s), no drop", chains.len()),
            rec,
            "-",
        );
    }
    let cur: Vec<String> = found
        .iter()
        .map(|f| format!("{} by {} ({})", f.need, f.chain, f.by))
        .collect();
    let fixes: Vec<String> = found.iter().map(|f| fix(nft, f)).collect();
    ctx.emit(
        Verdict::Fail,
        item,
        &format!("dropped: {}", cur.join("; ")),
        rec,
        &format!("(manual) {}", fixes.join("; ")),
    );
}

pub fn check_firewall(ctx: &mut Ctx) {
    ctx.area = "firewall";
    fw_item(ctx, "fw.nftables", true, "nft", &["list", "ruleset"]);
    fw_item(ctx, "fw.iptables", false, "iptables-save", &[]);
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULESET: &str = "table inet filter {\n\tchain input {\n\t\ttype filter hook input priority filter; policy drop;\n\
        \t\tct state established,related accept\n\t\tudp dport { 5400, 6000-6010 } accept\n\
        \t\tmeta pkttype multicast drop\n\t}\n\tchain fwd {\n\t\tdrop\n\t}\n}\n";

    #[test]
    fn drop_policy_flags_ports_not_accepted_and_multicast_drop_flags_igmp() {
        let chains = nft_chains(RULESET);
        assert_eq!(chains.len(), 1, "only base chains on a relevant hook");
        let f = findings(&chains, &[5400, 5401, 6005]);
        let got: Vec<(&str, &str)> = f.iter().map(|f| (f.need.as_str(), f.by.as_str())).collect();
        assert_eq!(
            got,
            vec![
                ("igmp", "meta pkttype multicast drop"),
                ("udp/5401", "policy drop")
            ]
        );
    }

    #[test]
    fn accepting_ruleset_has_no_findings() {
        let text = "*filter\n:INPUT DROP [0:0]\n-A INPUT -p igmp -j ACCEPT\n\
            -A INPUT -p udp -m multiport --dports 5400:5410 -j ACCEPT\nCOMMIT\n";
        let chains = ipt_chains(text);
        assert!(chains[0].policy_drop);
        assert_eq!(findings(&chains, &[5405]), vec![]);
        let f = findings(&chains, &[5411]);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].need, "udp/5411");
    }

    #[test]
    fn unconditional_counter_drop_hits_every_need() {
        let chains = vec![Chain {
            name: "ip t c".into(),
            rules: vec!["counter packets 0 bytes 0 drop".into()],
            policy_drop: false,
        }];
        let needs: Vec<String> = findings(&chains, &[]).into_iter().map(|f| f.need).collect();
        assert_eq!(needs, vec!["multicast", "igmp"]);
    }
}
