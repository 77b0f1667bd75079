#!/usr/bin/env python3
"""The proxy tier's watch figures, etcd grpc-proxy versus meridian-proxy, in one run.

Each server is one member behind its own proxy (as compare.py's proxy topology). For both, in
turn (A B A B):

1. Fan-out: `meridian-bench watch` with 10,000 watchers on one key range over 20 streams and
   200 puts, through the proxy: events/s, p99 put-to-delivery latency, lost/duplicated events,
   and the most watchers the member held meanwhile (etcd_debugging_mvcc_watcher_total).
2. Idle: `meridian-bench idle-watchers` with 100,000 watchers (100 streams) held open through the
   proxy: the proxy's RSS while they are open minus its RSS before any load, per client watcher
   (an upper bound: what the fan-out step left allocated counts too), and the member's watcher
   count.

  python3 bench/proxy_watchers.py [--reps 2] [--idle-watchers 100000] [--out FILE]

Prints a Markdown table and writes it to --out (default docs/benchmarks-proxy.md).
"""
import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (same folder)


def metric(endpoint, name):
    try:
        with urllib.request.urlopen(f"http://{endpoint}/metrics", timeout=3) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


class Sampler:
    """Polls the member's watcher count and the proxy's RSS while a load runs."""

    def __init__(self, member_ep, proxy_pid):
        self.member_ep, self.proxy_pid = member_ep, proxy_pid
        self.max_watchers, self.max_rss_kb = 0, 0
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.loop, daemon=True)

    def loop(self):
        while not self.stop.is_set():
            w = metric(self.member_ep, "etcd_debugging_mvcc_watcher_total")
            if w is not None:
                self.max_watchers = max(self.max_watchers, int(w))
            rss = compare.proc_status_kb(self.proxy_pid, "VmRSS") or 0
            self.max_rss_kb = max(self.max_rss_kb, rss)
            self.stop.wait(0.2)

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.t.join()


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--watchers", type=int, default=10000)
    ap.add_argument("--puts", type=int, default=200)
    ap.add_argument("--idle-watchers", type=int, default=100000)
    ap.add_argument("--out", default=os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "benchmarks-proxy.md"))
    args = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    bins = {"node": os.path.join(root, "build/bin/meridian-node"),
            "bench": os.path.join(root, "build/bin/meridian-bench"),
            "proxy": os.path.join(root, "build/bin/meridian-proxy"),
            "etcd": compare.shutil.which("etcd") or "/usr/bin/etcd",
            "etcdctl": compare.shutil.which("etcdctl") or "/usr/bin/etcdctl"}
    work = tempfile.mkdtemp(prefix="proxy-watchers-")
    rows = {"etcd": [], "meridian": []}
    clusters = {}
    try:
        for kind in ("etcd", "meridian"):
            c = compare.Cluster(kind, "proxy", bins, work)
            c.start()
            clusters[kind] = c
        # RSS of each proxy before any load: growth is counted from here, so memory the fan-out
        # step left behind counts against the idle watchers (an upper bound, not a flattering one).
        fresh_kb = {k: compare.proc_status_kb(c.proxy.pid, "VmRSS") or 0
                    for k, c in clusters.items()}
        for rep in range(args.reps):
            for kind in ("etcd", "meridian"):
                c = clusters[kind]
                member, proxy_pid = c.member_endpoints[0], c.proxy.pid
                row = {}
                with Sampler(member, proxy_pid) as s:
                    res, err = compare.run_bench(
                        bins["bench"],
                        ["watch", "--watchers", str(args.watchers), "--streams", "20", "--puts",
                         str(args.puts), "--clients", "10", "--conns", "20", "--val-size", "256"],
                        c.endpoints, 600)
                if not res:
                    print(f"{kind} fan-out failed: {err}", file=sys.stderr)
                    continue
                w = res["watch"]
                row.update(events_per_s=res["qps"], p99_ms=res["latency_ms"]["p99"],
                           lost=w["lost"], dup=w["duplicated"], ooo=w["out_of_order"],
                           upstream_fanout=s.max_watchers)
                hold_ms = 8000
                idle = subprocess.Popen(
                    [bins["bench"], "idle-watchers", "--watchers", str(args.idle_watchers),
                     "--streams", "100", "--conns", "10", "--hold-ms", str(hold_ms),
                     "--endpoints", ",".join(c.endpoints), "--progress", "0", "--quiet"],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                with Sampler(member, proxy_pid) as s:
                    idle.communicate(timeout=600)
                row.update(idle_upstream=s.max_watchers,
                           rss_per_watcher_b=(s.max_rss_kb - fresh_kb[kind]) * 1024 /
                           args.idle_watchers)
                rows[kind].append(row)
                print(f"rep {rep} {kind}: {row}", flush=True)
    finally:
        for c in clusters.values():
            c.stop()

    def med(kind, key):
        return compare.median([r[key] for r in rows[kind]])

    lines = [f"Proxy watch figures ({args.reps} reps, medians; `python3 bench/proxy_watchers.py`), "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, nproc {os.cpu_count()}",
             "",
             "| figure | etcd grpc-proxy | meridian-proxy | ratio |", "|---|---:|---:|---:|"]
    for key, label in (("events_per_s", f"events/s, {args.watchers:,} watchers on one range"),
                       ("p99_ms", "p99 put-to-delivery ms"),
                       ("upstream_fanout", f"upstream watchers for {args.watchers:,} clients"),
                       ("idle_upstream", f"upstream watchers for {args.idle_watchers:,} idle clients"),
                       ("rss_per_watcher_b", f"proxy RSS bytes per idle client watcher "
                                             f"({args.idle_watchers:,})"),
                       ("lost", "lost events"), ("dup", "duplicated events")):
        e, m = med("etcd", key), med("meridian", key)
        lines.append(f"| {label} | {compare.fmt(e)} | {compare.fmt(m)} | "
                     f"{compare.fmt_ratio(compare.ratio(m, e))} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
