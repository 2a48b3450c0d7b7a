#!/usr/bin/env python3
"""Turns the RESULT json files of a bench/turn.sh or bench/signal.sh run into a markdown summary.

Usage: summarize.py turn|signal|call DIR
"""
import json
import os
import statistics
import sys


def load(d, name):
    p = os.path.join(d, name + ".json")
    try:
        with open(p) as f:
            text = f.read().strip()
        return json.loads(text) if text else None
    except (OSError, json.JSONDecodeError):
        return None


def fmt(v, digits=0, unit=""):
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    if isinstance(v, float) and digits == 0:
        return f"{v:,.0f}{unit}"
    return f"{v:,.{digits}f}{unit}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.2f}×"


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def best_field(r, field):
    """Median over repeats of a field of each repeat's best step."""
    if not r:
        return None
    return med([(rep.get("best") or {}).get(field) for rep in r.get("repeats", [])])


def turn(d):
    direct = load(d, "direct")
    relay = {n: load(d, f"{n}.relay") for n in ("raw", "ours", "coturn")}
    binding = {n: load(d, f"{n}.binding") for n in ("ours", "coturn")}
    hold = {n: load(d, f"{n}.hold") for n in ("ours", "coturn")}
    rate = {n: (r or {}).get("median_best_rate") for n, r in relay.items()}
    lat = {n: ((r or {}).get("latency") or {}) for n, r in relay.items()}
    floor = None
    if direct:
        steps = direct["repeats"][0]["steps"]
        floor = steps[0].get("p50_us") if steps else None
    out = []
    out.append(open(os.path.join(d, "machine.txt")).read().strip() if os.path.exists(os.path.join(d, "machine.txt")) else "")
    out.append("")
    out.append("| measurement | raw forwarder | peercall | coturn | peercall / coturn | peercall / raw |")
    out.append("| --- | ---: | ---: | ---: | ---: | ---: |")

    def row(label, vals, digits=0, unit="", ratios=True):
        r, o, c = vals
        out.append(
            f"| {label} | {fmt(r, digits, unit)} | {fmt(o, digits, unit)} | {fmt(c, digits, unit)} | "
            f"{ratio(o, c) if ratios else '–'} | {ratio(o, r) if ratios else '–'} |"
        )

    row("ChannelData relayed, packets/s at < 0.1 % loss (median)", (rate["raw"], rate["ours"], rate["coturn"]))
    reps = {n: ", ".join(fmt(x) for x in (r or {}).get("best_rates", [])) for n, r in relay.items()}
    out.append(f"| … each sweep | {reps['raw']} | {reps['ours']} | {reps['coturn']} | | |")
    lr = lat["ours"].get("target_rate") or lat["coturn"].get("target_rate")
    row(f"latency p50 at {fmt(lr)} packets/s, µs", tuple(lat[n].get("p50_us") for n in ("raw", "ours", "coturn")), 1)
    if floor is not None:
        row(
            f"added latency p50 (minus {floor:.1f} µs direct), µs",
            tuple((lat[n].get("p50_us") - floor) if lat[n].get("p50_us") is not None else None for n in ("raw", "ours", "coturn")),
            1,
        )
    row(f"latency p99 at {fmt(lr)} packets/s, µs", tuple(lat[n].get("p99_us") for n in ("raw", "ours", "coturn")), 1)
    row("server CPU at the best rate, % of one core", tuple(best_field(relay[n], "server_cpu_percent") for n in ("raw", "ours", "coturn")), 0, "", False)
    row("server CPU per relayed packet, µs", tuple(best_field(relay[n], "server_cpu_us_per_packet") for n in ("raw", "ours", "coturn")), 2)
    row("generator CPU at the best rate, % of one core", tuple(best_field(relay[n], "generator_cpu_percent") for n in ("raw", "ours", "coturn")), 0, "", False)
    closed = {n: {c["window"]: c for c in ((load(d, f"{n}.closed") or {}).get("closed_loop") or [])} for n in ("raw", "ours", "coturn")}
    windows = sorted({w for c in closed.values() for w in c})
    for w in windows:
        def cl(n, field=None):
            c = closed[n].get(w)
            if not c:
                return None
            return c.get("median_rate") if field is None else (c.get("median") or {}).get(field)
        row(f"closed loop, {w} in flight per allocation: packets/s relayed (median)", tuple(cl(n) for n in ("raw", "ours", "coturn")))
        out.append(f"| … each run | " + " | ".join(", ".join(fmt(x) for x in (closed[n].get(w) or {}).get("rates", [])) for n in ("raw", "ours", "coturn")) + " | | |")
        row(f"closed loop, {w} in flight: server CPU per relayed packet, µs", tuple(cl(n, "server_cpu_us_per_packet") for n in ("raw", "ours", "coturn")), 2)
        row(f"closed loop, {w} in flight: server CPU, % of one core", tuple(cl(n, "server_cpu_percent") for n in ("raw", "ours", "coturn")), 0, "", False)
        row(f"closed loop, {w} in flight: latency p50 / p99, µs", tuple(
            f"{cl(n, 'p50_us'):,.0f} / {cl(n, 'p99_us'):,.0f}" if cl(n, "p50_us") is not None else None for n in ("raw", "ours", "coturn")), 0, "", False)
    row("p50 latency at the best rate, µs", tuple(best_field(relay[n], "p50_us") for n in ("raw", "ours", "coturn")), 0, "", False)
    brate = {n: (b or {}).get("median_best_rate") for n, b in binding.items()}
    row("STUN Binding answered/s at < 0.1 % loss (median)", (None, brate["ours"], brate["coturn"]))
    breps = {n: ", ".join(fmt(x) for x in (b or {}).get("best_rates", [])) for n, b in binding.items()}
    out.append(f"| … each sweep | | {breps['ours']} | {breps['coturn']} | | |")
    row("Binding: server CPU per answer, µs", (None, best_field(binding["ours"], "server_cpu_us_per_packet"), best_field(binding["coturn"], "server_cpu_us_per_packet")), 2)
    h = {n: hold[n] or {} for n in hold}
    row("allocations created (with one channel each)", (None, h["ours"].get("created"), h["coturn"].get("created")), 0, "", False)
    row("allocations per second while creating", tuple(
        (x.get("created") / x["create_secs"]) if x.get("create_secs") else None for x in (None or {}, h["ours"], h["coturn"])
    ), 0, "", True)
    row("server memory per allocation, bytes (VmRSS delta)", (None, h["ours"].get("bytes_per_allocation"), h["coturn"].get("bytes_per_allocation")))
    row("… after holding and refreshing, bytes", (None, h["ours"].get("bytes_per_allocation_held"), h["coturn"].get("bytes_per_allocation_held")))
    row("refresh failures while holding", (None, h["ours"].get("refresh_failures"), h["coturn"].get("refresh_failures")), 0, "", False)
    return "\n".join(out)


def conns_runs(d, n):
    """Every memory run of one server (MODE=memory writes n.conns, n.conns.2, ...)."""
    runs = [load(d, f"{n}.conns")]
    i = 2
    while os.path.exists(os.path.join(d, f"{n}.conns.{i}.json")):
        runs.append(load(d, f"{n}.conns.{i}"))
        i += 1
    return [r for r in runs if r]


def per_conn(r):
    return (r.get("hold") or {}).get("bytes_per_connection")


def median_conns(d, n):
    """The memory run with the median bytes per connection (the lower middle one for an even count), so every
    figure in the table comes from one run."""
    runs = sorted((r for r in conns_runs(d, n) if per_conn(r) is not None), key=per_conn)
    return runs[(len(runs) - 1) // 2] if runs else None


def signal(d):
    out = []
    mt = os.path.join(d, "machine.txt")
    if os.path.exists(mt):
        out.append(open(mt).read().strip())
        out.append("")
    rate = {n: load(d, f"{n}.rate") for n in ("peercall", "peerjs")}
    conns = {n: median_conns(d, n) for n in ("peercall", "peerjs")}
    out.append("| measurement | peercall | PeerJS | peercall / PeerJS |")
    out.append("| --- | ---: | ---: | ---: |")

    def row(label, a, b, digits=0, show_ratio=True):
        out.append(f"| {label} | {fmt(a, digits)} | {fmt(b, digits)} | {ratio(a, b) if show_ratio else '–'} |")

    r = {n: (x or {}) for n, x in rate.items()}
    crit = ""
    row(f"messages/s relayed with ≥ 99.9 % delivered and p99 ≤ bound (median){crit}", r["peercall"].get("median_best_rate"), r["peerjs"].get("median_best_rate"))
    out.append("| … each sweep | " + ", ".join(fmt(x) for x in r["peercall"].get("best_rates", [])) + " | " + ", ".join(fmt(x) for x in r["peerjs"].get("best_rates", [])) + " | |")
    row("times every client was connected again (a step had lost some: dropped as too slow)", r["peercall"].get("reconnects"), r["peerjs"].get("reconnects"), 0, False)
    row("p50 latency at the best rate, ms", best_field(r["peercall"], "p50_ms"), best_field(r["peerjs"], "p50_ms"), 2, False)
    row("p99 latency at the best rate, ms", best_field(r["peercall"], "p99_ms"), best_field(r["peerjs"], "p99_ms"), 2, False)
    row("server CPU at the best rate, % of one core", best_field(r["peercall"], "server_cpu_percent"), best_field(r["peerjs"], "server_cpu_percent"), 0, False)
    row("server CPU per message at the best rate, µs", best_field(r["peercall"], "server_cpu_us_per_message"), best_field(r["peerjs"], "server_cpu_us_per_message"), 2)
    row("generator CPU at the best rate, % of one core", best_field(r["peercall"], "generator_cpu_percent"), best_field(r["peerjs"], "generator_cpu_percent"), 0, False)
    la, lb = r["peercall"].get("latency") or {}, r["peerjs"].get("latency") or {}
    lr = la.get("target_rate") or lb.get("target_rate")
    row(f"delivered at {fmt(lr)} messages/s, %", la.get("delivered_percent"), lb.get("delivered_percent"), 2, False)
    row(f"p50 latency at {fmt(lr)} messages/s, ms", la.get("p50_ms"), lb.get("p50_ms"), 2)
    row(f"p99 latency at {fmt(lr)} messages/s, ms", la.get("p99_ms"), lb.get("p99_ms"), 2)
    row(f"server CPU at {fmt(lr)} messages/s, % of one core", la.get("server_cpu_percent"), lb.get("server_cpu_percent"), 0)
    row(f"server CPU per message at {fmt(lr)} messages/s, µs", la.get("server_cpu_us_per_message"), lb.get("server_cpu_us_per_message"), 2)
    c = {n: (x or {}) for n, x in conns.items()}
    row("connections requested", c["peercall"].get("clients"), c["peerjs"].get("clients"), 0, False)
    row("connections held (alive after the hold)", (c["peercall"].get("hold") or {}).get("live"), (c["peerjs"].get("hold") or {}).get("live"), 0, False)
    row("connect time for all, s", c["peercall"].get("connect_secs"), c["peerjs"].get("connect_secs"), 1)
    rss = {n: (c[n].get("hold") or {}).get("rss_held_kib") for n in c}
    row("server VmRSS holding them, MiB", (rss["peercall"] or 0) / 1024 if rss["peercall"] else None, (rss["peerjs"] or 0) / 1024 if rss["peerjs"] else None, 1)
    idle = {n: c[n].get("rss_before_kib") for n in c}
    row("server VmRSS idle (before connecting), MiB", idle["peercall"] / 1024 if idle["peercall"] else None, idle["peerjs"] / 1024 if idle["peerjs"] else None, 1)
    above = {n: (rss[n] - idle[n]) / 1024 if rss[n] and idle[n] else None for n in c}
    row("… above the idle process holding them, MiB", above["peercall"], above["peerjs"], 1)
    row("server memory per connection, bytes", (c["peercall"].get("hold") or {}).get("bytes_per_connection"), (c["peerjs"].get("hold") or {}).get("bytes_per_connection"))
    each = {n: ", ".join(fmt(per_conn(r)) for r in conns_runs(d, n) if per_conn(r) is not None) for n in c}
    out.append(f"| … each memory run, bytes | {each['peercall']} | {each['peerjs']} | |")
    chk = {n: ((c[n].get("hold") or {}).get("check") or {}) for n in c}
    row("after holding: % of clients' messages delivered", chk["peercall"].get("delivered_percent"), chk["peerjs"].get("delivered_percent"), 2, False)
    return "\n".join(out)


def call(d):
    r = load(d, "call-setup") or {}
    out = ["| measurement | median ms | runs (ms) |", "| --- | ---: | --- |"]
    for key, label in (("limit", "two RTCPeerConnections in one page, direct (the limit)"), ("peercall", "peercall web client: join → first remote frame")):
        xs = r.get(key) or []
        out.append(f"| {label} | {fmt(med(xs), 0)} | {', '.join(fmt(x, 0) for x in xs)} |")
    a, b = med(r.get("peercall") or []), med(r.get("limit") or [])
    out.append(f"| ratio peercall / limit | {ratio(a, b)} | |")
    return "\n".join(out)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("turn", "signal", "call"):
        sys.exit(__doc__)
    print({"turn": turn, "signal": signal, "call": call}[sys.argv[1]](sys.argv[2]))
