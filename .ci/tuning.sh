#!/usr/bin/env bash
# .ci/tuning.sh: lint the host-tuning scripts (called by .ci/run).
# Installs shellcheck when missing, plus the tools the tune tests exercise when present
# (ethtool, nftables, iptables); then runs shellcheck on every tuning script and fails on any
# finding. Run it before `cargo test` so the tune tests find those tools.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

missing=()
command -v shellcheck > /dev/null 2>&1 || missing+=(shellcheck)
command -v ethtool > /dev/null 2>&1 || missing+=(ethtool)
command -v nft > /dev/null 2>&1 || missing+=(nftables)
command -v iptables-save > /dev/null 2>&1 || missing+=(iptables)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get > /dev/null 2>&1; then
        echo "tuning: installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq > /dev/null || echo "tuning: apt-get update failed"
        # The linter is required (checked below); the others only widen what the tests exercise.
        apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null ||
            apt-get install -y -qq --no-install-recommends shellcheck > /dev/null ||
            echo "tuning: apt-get install ${missing[*]} failed"
    fi
fi
if ! command -v shellcheck > /dev/null 2>&1; then
    echo "tuning: FAIL: shellcheck is not installed and could not be installed" >&2
    exit 1
fi

mapfile -t scripts < <(find tuning -type f -name "*.sh" | sort; echo .ci/tuning.sh)
echo "tuning: shellcheck $(shellcheck --version | sed -n 's/^version: //p') on ${#scripts[@]} scripts"
# -x follows the `source` lines from the entry script; each lib is also checked alone.
shellcheck -x "${scripts[@]}"
for s in "${scripts[@]}"; do bash -n "$s"; done
echo "tuning: shellcheck clean"
