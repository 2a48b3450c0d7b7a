#!/usr/bin/env bash
# A simulated internet in network namespaces, for the NAT suite (tests/nat/*.test.mjs). Root only.
#
#   netns.sh up                  remove a stale set, then build everything below
#   netns.sh down                remove every namespace of the set (and end the processes left in them)
#   netns.sh renumber ROUTER IP  give NAT router ROUTER (e.g. cone1) a new public address and flush its conntrack
#   netns.sh list                the namespaces of the set
#
# Every namespace is named $PCNAT_PREFIX* (default "pcnat-"). Nothing is connected to the namespace this script
# runs in: the "internet" has no default route and no link out, so no packet leaves the set.
#
#                                pcnat-inet  (router of the simulated internet; no default route)
#        203.0.113.0/28 ────────┘ │ │ │ │ └──────── 198.51.100.N*16/28, one per NAT router
#   pcnat-srv 203.0.113.10 (HTTPS 443)        pcnat-r-KIND wan 198.51.100.N*16+2 ── lan 10.N.0.1/24
#             203.0.113.11 (STUN/TURN 3478,                │
#                           TURNS 443, relays)           pcnat-h-KIND 10.N.0.2 (a client: Chromium, coturn's clients)
#   pcnat-r-vm 203.0.113.20 (1:1 NAT) ── 10.200.0.1/24 ── pcnat-vm 10.200.0.10 (a cloud VM: private address only)
#
# NAT kinds (nft in the router namespaces; every router drops what is addressed to itself unsolicited, so
# conntrack never keeps an inbound entry that would take the port a hole punch needs):
#   cone1, cone2  masquerade: Linux keeps the source port when it is free, so one socket gets one public port
#                 whatever the destination (endpoint-independent mapping; filtering is by conntrack, so only
#                 replies to what went out come in, as in a home router). Verified by the suite before use.
#   sym1, sym2    masquerade fully-random: a new random port for every new destination (symmetric).
#   udpblock      cone, but every UDP packet from the LAN is dropped (TCP only).
#   tcp443        only TCP to port 443 goes out (an office firewall).
set -euo pipefail

P=${PCNAT_PREFIX:-pcnat-}
ROUTERS=(cone1 cone2 sym1 sym2 udpblock tcp443)

in_ns() { local ns=$1; shift; ip netns exec "$P$ns" "$@"; }

list() { ip netns list 2>/dev/null | awk '{print $1}' | grep "^$P" || true; }

down() {
    local ns pid
    for ns in $(list); do
        # Processes still in a namespace of the set (a killed run's servers and browsers) are this suite's own.
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    done
    for ns in $(list); do ip netns delete "$ns" 2>/dev/null || true; done
}

mkns() {
    ip netns add "$P$1"
    in_ns "$1" ip link set lo up
    in_ns "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
}

# link NS_A IF_A NS_B IF_B: a veth pair made directly inside the two namespaces.
link() {
    ip link add "$2" netns "$P$1" type veth peer name "$4" netns "$P$3"
    in_ns "$1" ip link set "$2" up
    in_ns "$3" ip link set "$4" up
}

router_index() {
    local i
    for i in "${!ROUTERS[@]}"; do [ "${ROUTERS[$i]}" = "$1" ] && { echo $((i + 1)); return; }; done
    echo "unknown router $1" >&2
    return 1
}

nat_rules() {
    local kind=$1 masq="masquerade" lan_out="iifname \"lan\" oifname \"wan\" accept"
    case $kind in
        cone*) ;;
        sym*) masq="masquerade fully-random" ;;
        udpblock) lan_out="iifname \"lan\" meta l4proto udp drop
            iifname \"lan\" oifname \"wan\" accept" ;;
        tcp443) lan_out="iifname \"lan\" oifname \"wan\" tcp dport 443 accept" ;;
        *) echo "unknown NAT kind $kind" >&2; return 1 ;;
    esac
    cat <<EOF
table ip nat {
    chain postrouting { type nat hook postrouting priority srcnat; policy accept;
        oifname "wan" $masq
    }
}
table ip filter {
    chain input { type filter hook input priority filter; policy accept;
        iifname "wan" ct state established,related accept
        iifname "wan" drop
    }
    chain forward { type filter hook forward priority filter; policy drop;
        ct state established,related accept
        $lan_out
    }
}
EOF
}

up() {
    down
    mkns inet
    in_ns inet sysctl -qw net.ipv4.ip_forward=1

    # The public server: HTTPS on .10, STUN/TURN and TURNS on .11 (two addresses, so TURNS can have port 443).
    mkns srv
    link inet srv srv wan
    in_ns inet ip addr add 203.0.113.1/28 dev srv
    in_ns srv ip addr add 203.0.113.10/28 dev wan
    in_ns srv ip addr add 203.0.113.11/28 dev wan
    in_ns srv ip route add default via 203.0.113.1

    # A cloud VM: a private address on the host, its public one on a 1:1 NAT in front of it.
    mkns r-vm
    mkns vm
    link inet vm r-vm wan
    link r-vm lan vm lan
    in_ns inet ip addr add 203.0.113.17/28 dev vm
    in_ns r-vm ip addr add 203.0.113.20/28 dev wan
    in_ns r-vm ip addr add 10.200.0.1/24 dev lan
    in_ns r-vm ip route add default via 203.0.113.17
    in_ns r-vm sysctl -qw net.ipv4.ip_forward=1
    in_ns vm ip addr add 10.200.0.10/24 dev lan
    in_ns vm ip route add default via 10.200.0.1
    in_ns r-vm nft -f - <<'EOF'
table ip nat {
    chain prerouting { type nat hook prerouting priority dstnat; policy accept;
        iifname "wan" ip daddr 203.0.113.20 dnat to 10.200.0.10
    }
    chain postrouting { type nat hook postrouting priority srcnat; policy accept;
        oifname "wan" ip saddr 10.200.0.10 snat to 203.0.113.20
    }
}
EOF

    # NAT routers, one client host behind each.
    local name n base
    for name in "${ROUTERS[@]}"; do
        n=$(router_index "$name")
        base=$((n * 16))
        mkns "r-$name"
        mkns "h-$name"
        link inet "$name" "r-$name" wan
        link "r-$name" lan "h-$name" lan
        in_ns inet ip addr add "198.51.100.$((base + 1))/28" dev "$name"
        in_ns "r-$name" ip addr add "198.51.100.$((base + 2))/28" dev wan
        in_ns "r-$name" ip addr add "10.$n.0.1/24" dev lan
        in_ns "r-$name" ip route add default via "198.51.100.$((base + 1))"
        in_ns "r-$name" sysctl -qw net.ipv4.ip_forward=1
        nat_rules "$name" | in_ns "r-$name" nft -f -
        in_ns "h-$name" ip addr add "10.$n.0.2/24" dev lan
        in_ns "h-$name" ip route add default via "10.$n.0.1"
    done
}

# renumber ROUTER IP: the ISP gives the router a new public address; its NAT mappings are gone.
renumber() {
    local name=$1 ip=$2
    in_ns "r-$name" ip addr flush dev wan
    in_ns "r-$name" ip addr add "$ip/28" dev wan
    in_ns "r-$name" ip route replace default via "198.51.100.$(($(router_index "$name") * 16 + 1))"
    in_ns "r-$name" conntrack -F >/dev/null 2>&1 || true
}

case ${1:-} in
    up) up ;;
    down) down ;;
    renumber) renumber "$2" "$3" ;;
    list) list ;;
    *) echo "usage: $0 up|down|renumber ROUTER IP|list" >&2; exit 2 ;;
esac
