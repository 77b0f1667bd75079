#!/usr/bin/env python3
"""Meridian vs etcd: the same workloads against both, on loopback, with the same settings.

For each topology (one member; three members; one member behind a gRPC proxy) this starts
Debian's etcd and meridian-node, each on a fresh data dir and free 127.0.0.1 ports, runs every
workload with meridian-bench against both alternately (A B A B ...), repeated, and reports the
medians of throughput, p99 latency and peak RSS (VmHWM of the server processes, reset before each
run through /proc/<pid>/clear_refs) with the ratio Meridian / etcd. Then memory steps on fresh
single members: RSS per 10,000 idle watchers (one stream, many streams) and per 1M keys of 256-byte
values. Watch fan-out runs at 1,000 (`watch`) and 10,000 (`watch-10k`) watchers.

Writes <out-dir>/benchmarks.md (table, date, machine, command), benchmarks.csv (medians),
benchmarks-runs.csv (every run) and benchmarks.png (gnuplot). Topologies whose binary or flag
does not exist yet are skipped with a message saying why.

  python3 bench/compare.py            # defaults: about 7 minutes on 2 cores
  python3 bench/compare.py --quick    # about 80 s
  python3 bench/compare.py --quick --topologies three --no-memory --out-dir /tmp/cmp

Three members: three members per server on their own ports and data dirs, loaded once all are
healthy and agree on a leader; meridian-bench gets all three client endpoints. Peak RSS is the
sum over the members.

Proxy: one member behind each one's proxy (etcd behind `etcd grpc-proxy start`, meridian-node
behind meridian-proxy), loaded through the proxy's address only; peak RSS of the member and of
the proxy are reported separately. Skipped (with the reason) only when meridian-proxy is not
built.

Binaries: --node-bin / $MERIDIAN_NODE_BIN (default build/bin/meridian-node), --bench-bin /
$MERIDIAN_BENCH_BIN (default build/bin/meridian-bench), --proxy-bin / $MERIDIAN_PROXY_BIN
(default meridian-proxy next to the node), --etcd-bin (default etcd on PATH).
Only Python's standard library and Debian packages (etcd, etcdctl, gnuplot) are used.
"""
import argparse
import csv
import ctypes
import datetime
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PR_SET_PDEATHSIG = 1
QUOTA_BYTES = 8 * 1024 ** 3
# etcd's defaults, spelled out so both servers visibly run the same raft timing.
HEARTBEAT_MS = 100
ELECTION_MS = 1000
MIB = 1024.0


class Skip(Exception):
    """A topology that cannot run yet (missing binary or unsupported flag)."""


class Failed(Exception):
    """A topology that started but could not be measured (no leader, a member died, ...)."""


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def die_with_parent():
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port():
    return free_ports(1)[0]


def free_ports(n):
    """n distinct free loopback ports (all held open until chosen, so no duplicates)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            socks.append(s)
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def proc_status_kb(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_hwm(pid):
    """Resets VmHWM to the current RSS (Linux clear_refs 5); False if not permitted."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def tail(path, n=5):
    try:
        with open(path, errors="replace") as f:
            lines = [l.strip() for l in f.read().splitlines() if l.strip()]
        return " | ".join(lines[-n:])
    except OSError:
        return ""


class Proc:
    def __init__(self, argv, log_path):
        self.argv = argv
        self.log_path = log_path
        with open(log_path, "wb") as out:
            self.p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                      preexec_fn=die_with_parent, start_new_session=True)

    @property
    def pid(self):
        return self.p.pid

    def alive(self):
        return self.p.poll() is None

    def signal(self, sig):
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self):
        stop_all([self])


def stop_all(procs, grace_s=5):
    """SIGTERM to every process group at once (so members of a cluster shut down together rather
    than one by one, each waiting for the others), then SIGKILL whatever is left."""
    procs = [p for p in procs if p is not None]
    for p in procs:
        p.signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for p in procs:
        try:
            p.p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.signal(signal.SIGKILL)
            try:
                p.p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                log(f"   warning: pid {p.pid} ({os.path.basename(p.argv[0])}) did not exit")


class Cluster:
    """One system under test: `kind` is "etcd" or "meridian"; topology one, three or proxy."""

    def __init__(self, kind, topology, bins, workdir):
        self.kind = kind
        self.topology = topology
        self.bins = bins
        self.dir = os.path.join(workdir, f"{topology}-{kind}-{int(time.time() * 1000) % 10**8}")
        os.makedirs(self.dir)
        self.members = []
        self.proxy = None
        self.endpoints = []

    @property
    def label(self):
        return "Meridian" if self.kind == "meridian" else "etcd"

    def pids(self):
        """Every process of the topology: members, then the proxy."""
        return self.server_pids() + self.proxy_pids()

    def server_pids(self):
        return [p.pid for p in self.members]

    def proxy_pids(self):
        return [self.proxy.pid] if self.proxy else []

    def member_argv(self, name, client, peer, cluster):
        binary = self.bins["etcd"] if self.kind == "etcd" else self.bins["node"]
        curl, purl = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
        argv = [binary, "--name", name, "--data-dir", os.path.join(self.dir, name + ".data"),
                "--listen-client-urls", curl, "--advertise-client-urls", curl,
                "--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
                "--initial-cluster", cluster, "--initial-cluster-state", "new",
                "--initial-cluster-token", f"bench-{self.topology}",
                "--heartbeat-interval", str(HEARTBEAT_MS), "--election-timeout", str(ELECTION_MS),
                "--quota-backend-bytes", str(QUOTA_BYTES), "--log-level", "warn"]
        if self.kind == "etcd":
            argv.append("--logger=zap")  # logging only: capnslog is deprecated and chatty
        return argv

    def start(self):
        """Starts every member (and the proxy); returns once all members are healthy and agree
        on a leader. Stops whatever it started if anything goes wrong, including ^C."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self):
        n = 3 if self.topology == "three" else 1
        flat = free_ports(2 * n)
        ports = list(zip(flat[0::2], flat[1::2]))
        names = [f"m{i}" for i in range(n)]
        cluster = ",".join(f"{nm}=http://127.0.0.1:{pp}" for nm, (_, pp) in zip(names, ports))
        for nm, (cp, pp) in zip(names, ports):
            self.members.append(Proc(self.member_argv(nm, cp, pp, cluster),
                                     os.path.join(self.dir, nm + ".log")))
        member_eps = [f"127.0.0.1:{cp}" for cp, _ in ports]
        ok, detail = self.wait_ready(member_eps, 30)
        if not ok:
            dead = [p for p in self.members if not p.alive()]
            why = tail(dead[0].log_path if dead else self.members[0].log_path)
            if self.kind == "meridian" and "single-member clusters only" in why:
                raise Skip(f"this meridian-node build runs single-member clusters only ({why})")
            raise Failed(f"{self.label} {n}-member cluster did not become ready: {detail}"
                         + (f"; log: {why}" if why else ""))
        self.endpoints = member_eps
        self.member_endpoints = member_eps
        if self.topology == "proxy":
            self.start_proxy(member_eps)

    def start_proxy(self, member_eps):
        """Starts the proxy in front of the member(s) on a free port and waits until `etcdctl
        endpoint health` through it succeeds; from then on the load goes to the proxy only."""
        listen = f"127.0.0.1:{free_port()}"
        if self.kind == "etcd":
            # --data-dir: grpc-proxy would otherwise create ./default.proxy in the working dir.
            argv = [self.bins["etcd"], "grpc-proxy", "start", "--endpoints",
                    ",".join(member_eps), "--listen-addr", listen,
                    "--advertise-client-url", listen,
                    "--data-dir", os.path.join(self.dir, "proxy.data")]
        else:
            proxy = self.bins["proxy"]
            if not proxy_built(proxy):
                raise Skip(missing_proxy_message(proxy))
            # meridian-proxy's command line (MERIDIAN_PROXY_ARGS overrides the template).
            template = os.environ.get("MERIDIAN_PROXY_ARGS",
                                      "--endpoints={endpoints} --listen-addr={listen}")
            argv = [proxy] + shlex.split(
                template.format(endpoints=",".join(member_eps), listen=listen))
        self.proxy = Proc(argv, os.path.join(self.dir, "proxy.log"))
        if not self.wait_healthy([listen], 20):
            why = tail(self.proxy.log_path)
            state = "exited" if not self.proxy.alive() else "not healthy after 20 s"
            name = "etcd grpc-proxy" if self.kind == "etcd" else "meridian-proxy"
            raise Failed(f"{name} in front of {','.join(member_eps)} {state}"
                         + (f"; log: {why}" if why else ""))
        self.endpoints = [listen]

    def etcdctl(self, endpoints, *cmd):
        env = dict(os.environ, ETCDCTL_API="3")
        return subprocess.run([self.bins["etcdctl"], "--endpoints", ",".join(endpoints),
                               "--dial-timeout", "1s", "--command-timeout", "2s", *cmd],
                              env=env, capture_output=True, text=True, timeout=30)

    def wait_healthy(self, endpoints, timeout_s):
        return self.wait_ready(endpoints, timeout_s, leader=False)[0]

    def wait_ready(self, endpoints, timeout_s, leader=True):
        """Waits until every endpoint is healthy (a linearizable read: it needs a leader) and,
        with `leader`, until every member reports the same leader and that leader is one of
        them. Returns (ok, what was still missing)."""
        deadline = time.monotonic() + timeout_s
        detail = "no answer"
        while time.monotonic() < deadline:
            dead = [p for p in self.members + ([self.proxy] if self.proxy else [])
                    if not p.alive()]
            if dead:
                return False, f"{os.path.basename(dead[0].log_path)[:-4]} exited"
            r = self.etcdctl(endpoints, "endpoint", "health")
            if r.returncode != 0:
                detail = "endpoint health: " + " | ".join(
                    l for l in (r.stdout + r.stderr).splitlines() if "unhealthy" in l or
                    "error" in l.lower())[:300]
            elif not leader:
                return True, ""
            else:
                r = self.etcdctl(endpoints, "endpoint", "status", "-w", "json")
                try:
                    st = [e["Status"] for e in json.loads(r.stdout)] if r.returncode == 0 else []
                except (json.JSONDecodeError, KeyError, TypeError):
                    st = []
                ids = {s["header"]["member_id"] for s in st}
                leaders = {s.get("leader", 0) for s in st}
                if len(st) == len(endpoints) and len(leaders) == 1 and leaders <= ids:
                    return True, ""
                detail = (f"endpoint status: {len(st)}/{len(endpoints)} answered, leaders "
                          f"{sorted(leaders)}, members {sorted(ids)} {r.stderr.strip()[-200:]}")
            time.sleep(0.2)
        return False, f"after {timeout_s} s, {detail}"

    def stop(self):
        if self.proxy:
            stop_all([self.proxy])
        stop_all(self.members)

    def check_alive(self):
        dead = [p for p in self.members + ([self.proxy] if self.proxy else []) if not p.alive()]
        if dead:
            raise Failed(f"{self.label} {os.path.basename(dead[0].log_path)[:-4]} exited "
                         f"(code {dead[0].p.returncode}): {tail(dead[0].log_path)}")


def proxy_built(path):
    return bool(path) and os.path.isfile(path) and os.access(path, os.X_OK)


def missing_proxy_message(path):
    return (f"meridian-proxy is not built (no executable at {path}); build it with `cmake --build "
            f"build --target meridian-proxy` or pass --proxy-bin / MERIDIAN_PROXY_BIN")


def workloads(args):
    """name -> (meridian-bench arguments, uses --duration, what the throughput column counts)."""
    c = str(args.clients)
    conns = str(args.conns)
    q = args.quick
    common = ["--clients", c, "--conns", conns]
    range_keys = "1000" if q else "10000"
    delete_n = "5000" if q else "20000"
    w = {
        "put": (["put", *common, "--key-size", "16", "--val-size", "256",
                 "--key-space", "100000"], True, "req/s"),
        "range-l": (["range", "--consistency", "l", *common, "--key-size", "16", "--val-size",
                     "256", "--key-space", range_keys], True, "req/s"),
        "range-s": (["range", "--consistency", "s", *common, "--key-size", "16", "--val-size",
                     "256", "--key-space", range_keys], True, "req/s"),
        "txn-put": (["txn-put", *common, "--key-size", "16", "--val-size", "256",
                     "--key-space", "100000"], True, "req/s"),
        "delete": (["delete", *common, "--key-size", "16", "--key-space", delete_n, "--total",
                    delete_n], False, "req/s"),
        "watch": (["watch", "--watchers", "100" if q else "1000", "--streams", "10", "--puts",
                   "200", "--clients", "10", "--conns", conns, "--val-size", "256"], False,
                  "events/s"),
        # Fan-out at 10,000 watchers (100 per stream, as above); fewer puts keep the run short:
        # 10,000 x 50 = 500,000 events.
        "watch-10k": (["watch", "--watchers", "10000", "--streams", "100", "--puts", "50",
                       "--clients", "10", "--conns", conns, "--val-size", "256"], False,
                      "events/s"),
        "watch-latency": (["watch-latency", "--watchers", "10", "--streams", "10", "--puts",
                           str(int(100 * args.duration)), "--rate", "100"], False, "events/s"),
        "lease-keepalive": (["lease-keepalive", *common], True, "req/s"),
        "k8s": (["k8s", *common, "--key-space", "5000", "--val-size", "1024", "--watchers", "10",
                 "--streams", "10", "--page-size", "500"], True, "req/s"),
    }
    return w


DEFAULT_WORKLOADS = ["put", "range-l", "range-s", "txn-put", "delete", "watch", "watch-10k",
                     "watch-latency", "lease-keepalive", "k8s"]
QUICK_WORKLOADS = ["put", "range-l", "range-s", "watch", "k8s"]
# The multi-process topologies run the core subset to stay within the time budget.
SUBSET_WORKLOADS = ["put", "range-l", "range-s", "watch", "k8s"]


def run_bench(bench, argv, endpoints, timeout_s, extra=()):
    cmd = [bench, *argv, *extra, "--endpoints", ",".join(endpoints), "--progress", "0",
           "--quiet"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout_s} s: {' '.join(cmd)}"
    lines = [l for l in r.stdout.splitlines() if l.strip()]
    if r.returncode != 0 or not lines:
        return None, f"exit {r.returncode}: {r.stderr.strip()[-400:]}"
    try:
        return json.loads(lines[-1]), ""
    except json.JSONDecodeError as e:
        return None, f"bad JSON ({e})"


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def fmt(v, digits=1):
    if v is None:
        return "n/a"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def fmt_ratio(v):
    return "n/a" if v is None else f"{v:.2f}"


def run_topology(topology, names, args, bins, workdir, runs, summary):
    """Runs `names` against both servers in `topology`; appends to runs and summary.
    Returns None, or ("skipped" | "failed", why); every process started is stopped on return."""
    log(f"== topology {topology}")
    clusters = {}
    if topology == "proxy" and not proxy_built(bins["proxy"]):
        # Checked before etcd starts: half a comparison is not worth its minutes.
        why = missing_proxy_message(bins["proxy"])
        log(f"   skipped: {why}")
        return "skipped", why
    try:
        for kind in ("etcd", "meridian"):
            c = Cluster(kind, topology, bins, workdir)
            clusters[kind] = c
            c.start()
            log(f"   {c.label}: {len(c.members)} member(s) ready, endpoints "
                f"{','.join(c.endpoints)}")
        defs = workloads(args)
        for name in names:
            argv, timed, unit = defs[name]
            extra = ["--duration", str(args.duration)] if timed else []
            per = {"etcd": [], "meridian": []}
            for rep in range(args.reps):
                for kind in ("etcd", "meridian"):  # A B A B ...
                    c = clusters[kind]
                    c.check_alive()
                    hwm_ok = all(reset_hwm(pid) for pid in c.pids())
                    timeout = int(args.duration * 10 + 120)
                    res, err = run_bench(bins["bench"], argv, c.endpoints, timeout, extra)
                    hwm = sum(proc_status_kb(pid, "VmHWM") or 0 for pid in c.server_pids())
                    proxy_hwm = (sum(proc_status_kb(pid, "VmHWM") or 0 for pid in c.proxy_pids())
                                 if c.proxy else None)
                    row = {"topology": topology, "workload": name, "server": kind, "rep": rep,
                           "qps": None, "p50_ms": None, "p99_ms": None, "max_ms": None,
                           "errors": None, "peak_rss_kb": hwm, "proxy_peak_rss_kb": proxy_hwm,
                           "hwm_reset": hwm_ok, "elapsed_s": None, "note": err}
                    if res:
                        lat = res["latency_ms"]
                        row.update(qps=res["qps"], p50_ms=lat["p50"], p99_ms=lat["p99"],
                                   max_ms=lat["max"], errors=res["error_count"],
                                   elapsed_s=res["elapsed_s"])
                        w = res.get("watch")
                        if w and name.startswith("watch"):
                            bad = {k: w[k] for k in ("lost", "duplicated", "out_of_order")
                                   if w[k]}
                            if bad:
                                row["note"] = f"watch {bad}"
                        if res["error_count"]:
                            row["note"] = (row["note"] + " " if row["note"] else "") + \
                                f"errors {res['errors']}: {res['first_error'][:120]}"
                    runs.append(row)
                    per[kind].append(row)
                    log(f"   {name:16s} {kind:8s} rep {rep}: {fmt(row['qps'])} {unit}, p99 "
                        f"{fmt(row['p99_ms'], 2)} ms, peak RSS {hwm / MIB:.0f} MiB"
                        + (f" (proxy {proxy_hwm / MIB:.0f} MiB)" if c.proxy else "")
                        + (f"  [{row['note']}]" if row["note"] else ""))
            e, m = per["etcd"], per["meridian"]
            s = {"topology": topology, "workload": name, "unit": unit}
            for key in ("qps", "p99_ms", "peak_rss_kb", "proxy_peak_rss_kb"):
                s[f"etcd_{key}"] = median([r[key] for r in e])
                s[f"meridian_{key}"] = median([r[key] for r in m])
            s["qps_ratio"] = ratio(s["meridian_qps"], s["etcd_qps"])
            s["p99_ratio"] = ratio(s["meridian_p99_ms"], s["etcd_p99_ms"])
            s["rss_ratio"] = ratio(s["meridian_peak_rss_kb"], s["etcd_peak_rss_kb"])
            s["proxy_rss_ratio"] = ratio(s["meridian_proxy_peak_rss_kb"],
                                         s["etcd_proxy_peak_rss_kb"])
            s["etcd_errors"] = sum(r["errors"] or 0 for r in e)
            s["meridian_errors"] = sum(r["errors"] or 0 for r in m)
            s["failed_runs"] = sum(1 for r in e + m if r["qps"] is None)
            summary.append(s)
        return None
    except Skip as why:
        log(f"   skipped: {why}")
        return "skipped", str(why)
    except Failed as why:
        log(f"   FAILED: {why}")
        return "failed", str(why)
    finally:
        for c in clusters.values():
            c.stop()


def memory_steps(args, bins, workdir):
    """Fresh single member per measurement; returns rows of (label, etcd_mib, meridian_mib)."""
    steps = [
        ("RSS per 10,000 idle watchers, one stream",
         ["idle-watchers", "--watchers", "10000", "--streams", "1", "--hold-ms", "1000"]),
        (f"RSS per 10,000 idle watchers, {args.many_streams:,} streams",
         ["idle-watchers", "--watchers", "10000", "--streams", str(args.many_streams),
          "--conns", "10", "--hold-ms", "1000"]),
    ]
    if not args.quick:
        # txn-put with 64 sequential puts per transaction writes 1M distinct keys quickly.
        steps.append(("RSS per 1M keys of 256-byte values",
                      ["txn-put", "--txn-ops", "64", "--total", str(1_000_000 // 64),
                       "--key-space", "1000000", "--sequential-keys", "--key-size", "16",
                       "--val-size", "256", "--clients", "50", "--conns", "10"]))
    rows = []
    for label, argv in steps:
        vals = {}
        notes = []
        for kind in ("etcd", "meridian"):
            c = Cluster(kind, "one", bins, workdir)
            try:
                c.start()
                time.sleep(1.0)  # let start-up allocations settle before the baseline
                pid = c.server_pids()[0]
                res, err = run_bench(bins["bench"], argv, c.endpoints, 600,
                                     ["--rss-pid", str(pid)])
                if res and res["error_count"] == 0 and res["server_rss_after_kb"] > 0:
                    vals[kind] = (res["server_rss_after_kb"] - res["server_rss_before_kb"]) / MIB
                    log(f"   {label} {kind}: {res['server_rss_before_kb'] / MIB:.1f} -> "
                        f"{res['server_rss_after_kb'] / MIB:.1f} MiB")
                else:
                    vals[kind] = None
                    notes.append(f"{kind}: {err or res.get('first_error')}")
                    log(f"   {label} {kind}: failed: {notes[-1]}")
            except (Skip, Failed) as why:
                vals[kind] = None
                notes.append(f"{kind}: {why}")
                log(f"   {label} {kind}: failed: {why}")
            finally:
                c.stop()
        rows.append((label, vals.get("etcd"), vals.get("meridian"), "; ".join(notes)))
    if args.quick:
        rows.append(("RSS per 1M keys of 256-byte values", None, None, "skipped in --quick"))
    return rows


def machine_info():
    total_kb = None
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                total_kb = int(line.split()[1])
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "mem_gib": (total_kb or 0) / 1024 ** 2, "cpu": model,
            "kernel": platform.release()}


def version(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return r.stdout.splitlines()[0].strip() if r.stdout else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def write_csvs(out_dir, runs, summary):
    with open(os.path.join(out_dir, "benchmarks-runs.csv"), "w", newline="") as f:
        cols = ["topology", "workload", "server", "rep", "qps", "p50_ms", "p99_ms", "max_ms",
                "errors", "peak_rss_kb", "proxy_peak_rss_kb", "hwm_reset", "elapsed_s", "note"]
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in runs:
            w.writerow(r)
    with open(os.path.join(out_dir, "benchmarks.csv"), "w", newline="") as f:
        cols = ["topology", "workload", "unit", "etcd_qps", "meridian_qps", "qps_ratio",
                "etcd_p99_ms", "meridian_p99_ms", "p99_ratio", "etcd_peak_rss_kb",
                "meridian_peak_rss_kb", "rss_ratio", "etcd_proxy_peak_rss_kb",
                "meridian_proxy_peak_rss_kb", "proxy_rss_ratio", "etcd_errors",
                "meridian_errors", "failed_runs"]
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for s in summary:
            w.writerow({k: s.get(k) for k in cols})


def write_chart(out_dir, summary, workdir):
    """A grouped bar chart of the three ratios per workload; False if gnuplot is missing."""
    gnuplot = shutil.which("gnuplot")
    if not gnuplot or not summary:
        return False
    data = os.path.join(workdir, "ratios.dat")
    # A fourth bar for the proxy's own peak RSS, only when the proxy topology has figures.
    with_proxy = any(s.get("proxy_rss_ratio") is not None for s in summary)
    with open(data, "w") as f:
        f.write("# label throughput p99 rss proxy_rss\n")
        for s in summary:
            label = s["workload"] if s["topology"] == "one" else f"{s['workload']}/{s['topology']}"
            vals = [s["qps_ratio"], s["p99_ratio"], s["rss_ratio"], s.get("proxy_rss_ratio")]
            f.write(label + " " + " ".join("NaN" if v is None else f"{v:.4f}" for v in vals)
                    + "\n")
    proxy_series = ", '' using 5 title \"proxy peak RSS\"" if with_proxy else ""
    rss_title = "member peak RSS" if with_proxy else "peak RSS"
    png = os.path.join(out_dir, "benchmarks.png")
    script = f"""
set terminal pngcairo size 1200,600 font ",10"
set output "{png}"
set title "Meridian / etcd (medians; throughput > 1 and p99, RSS < 1 favour Meridian)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set grid ytics
set yrange [0:*]
set ylabel "ratio Meridian / etcd"
set xtics rotate by -30 noenhanced
set key top left noenhanced
set arrow from graph 0, first 1 to graph 1, first 1 nohead dashtype 2 lw 2 lc rgb "black" front
plot "{data}" using 2:xtic(1) title "throughput", '' using 3 title "p99 latency", \\
     '' using 4 title "{rss_title}"{proxy_series}
"""
    r = subprocess.run([gnuplot], input=script, capture_output=True, text=True)
    if r.returncode != 0:
        log(f"gnuplot failed: {r.stderr.strip()}")
        return False
    return True


def render_table(summary, skipped, topo_names, failed=None):
    lines = []
    failed = failed or {}
    for topo in ("one", "three", "proxy"):
        if topo not in topo_names:
            continue
        lines.append(f"### {topo_names[topo]}")
        lines.append("")
        if topo in skipped:
            lines.append(f"Skipped: {skipped[topo]}")
            lines.append("")
            continue
        if topo in failed:
            lines.append(f"Failed: {failed[topo]}")
            lines.append("")
            if not any(s["topology"] == topo for s in summary):
                continue
        # Behind a proxy, the member's and the proxy's peak RSS get their own columns.
        proxied = topo == "proxy"
        if proxied:
            lines.append("| workload | etcd | Meridian | ratio | etcd p99 ms | Meridian p99 ms "
                         "| ratio | etcd member peak RSS MiB | Meridian member peak RSS MiB "
                         "| ratio | etcd grpc-proxy peak RSS MiB | meridian-proxy peak RSS MiB "
                         "| ratio | notes |")
            lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        else:
            lines.append("| workload | etcd | Meridian | ratio | etcd p99 ms | Meridian p99 ms "
                         "| ratio | etcd peak RSS MiB | Meridian peak RSS MiB | ratio | notes |")
            lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for s in summary:
            if s["topology"] != topo:
                continue
            notes = []
            if s["etcd_errors"] or s["meridian_errors"]:
                notes.append(f"errors etcd {s['etcd_errors']}, Meridian {s['meridian_errors']}")
            if s["failed_runs"]:
                notes.append(f"{s['failed_runs']} failed runs")
            rss = lambda v: None if v is None else v / MIB  # noqa: E731
            proxy_cols = ""
            if proxied:
                proxy_cols = (f"{fmt(rss(s.get('etcd_proxy_peak_rss_kb')))} | "
                              f"{fmt(rss(s.get('meridian_proxy_peak_rss_kb')))} | "
                              f"{fmt_ratio(s.get('proxy_rss_ratio'))} | ")
            lines.append(
                f"| {s['workload']} ({s['unit']}) | {fmt(s['etcd_qps'])} | "
                f"{fmt(s['meridian_qps'])} | {fmt_ratio(s['qps_ratio'])} | "
                f"{fmt(s['etcd_p99_ms'], 2)} | {fmt(s['meridian_p99_ms'], 2)} | "
                f"{fmt_ratio(s['p99_ratio'])} | {fmt(rss(s['etcd_peak_rss_kb']))} | "
                f"{fmt(rss(s['meridian_peak_rss_kb']))} | {fmt_ratio(s['rss_ratio'])} | "
                f"{proxy_cols}{'; '.join(notes)} |")
        lines.append("")
    return "\n".join(lines)


def render_memory(rows):
    lines = ["| measurement | etcd MiB | Meridian MiB | ratio | notes |",
             "|---|---:|---:|---:|---|"]
    for label, e, m, note in rows:
        lines.append(f"| {label} | {fmt(e)} | {fmt(m)} | {fmt_ratio(ratio(m, e))} | {note} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="about 80 s: fewer, shorter runs (watch with 100 watchers, no "
                         "watch-10k, put/range-l/watch only for three members and the proxy, "
                         "no 1M-key memory step)")
    ap.add_argument("--reps", type=int, help="repetitions per server (default 3, quick 2)")
    ap.add_argument("--duration", type=float, help="seconds per timed run (default 2, quick 1)")
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--conns", type=int, default=10)
    ap.add_argument("--many-streams", type=int, default=10000,
                    help="streams for the many-streams idle watcher step")
    ap.add_argument("--topologies", default="one,three,proxy",
                    help="comma-separated subset of one,three,proxy (default all)")
    ap.add_argument("--workloads", help="comma-separated subset of: " + ",".join(DEFAULT_WORKLOADS))
    ap.add_argument("--no-memory", action="store_true", help="skip the memory steps")
    ap.add_argument("--node-bin", default=os.environ.get(
        "MERIDIAN_NODE_BIN", os.path.join(REPO, "build", "bin", "meridian-node")))
    ap.add_argument("--bench-bin", default=os.environ.get(
        "MERIDIAN_BENCH_BIN", os.path.join(REPO, "build", "bin", "meridian-bench")))
    ap.add_argument("--proxy-bin", default=os.environ.get("MERIDIAN_PROXY_BIN"))
    ap.add_argument("--etcd-bin", default=shutil.which("etcd") or "/usr/bin/etcd")
    ap.add_argument("--etcdctl-bin", default=shutil.which("etcdctl") or "/usr/bin/etcdctl")
    ap.add_argument("--out-dir", default=os.path.join(REPO, "docs"),
                    help="where benchmarks.{md,csv,png} go (default docs/; use another "
                         "directory for quick or partial runs)")
    ap.add_argument("--keep-tmp", action="store_true")
    args = ap.parse_args()
    args.reps = args.reps or (2 if args.quick else 3)
    args.duration = args.duration or (1.0 if args.quick else 2.0)
    proxy = args.proxy_bin or os.path.join(os.path.dirname(args.node_bin), "meridian-proxy")
    bins = {"node": args.node_bin, "bench": args.bench_bin, "etcd": args.etcd_bin,
            "etcdctl": args.etcdctl_bin, "proxy": proxy}
    for key in ("node", "bench", "etcd", "etcdctl"):
        if not os.access(bins[key], os.X_OK):
            sys.exit(f"compare.py: {key} binary {bins[key]} not found; build it first "
                     f"(see bench/README.md) or pass --{key}-bin")
    if args.workloads:
        names = [n.strip() for n in args.workloads.split(",") if n.strip()]
        bad = [n for n in names if n not in DEFAULT_WORKLOADS]
        if bad:
            sys.exit(f"compare.py: unknown workloads {bad}")
    else:
        names = QUICK_WORKLOADS if args.quick else DEFAULT_WORKLOADS
    topologies = [t.strip() for t in args.topologies.split(",") if t.strip()]
    if not topologies or any(t not in ("one", "three", "proxy") for t in topologies):
        sys.exit(f"compare.py: --topologies takes one, three and proxy, got {args.topologies!r}")
    topo_names = {"one": "One member", "three": "Three members",
                  "proxy": "One member behind a gRPC proxy (etcd grpc-proxy vs meridian-proxy)"}
    topo_names = {t: topo_names[t] for t in topologies if t in topo_names}

    # SIGTERM/SIGINT unwind through the finally blocks, which stop every server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = tempfile.mkdtemp(prefix="meridian-compare-")
    started = time.monotonic()
    runs, summary, skipped, failed = [], [], {}, {}
    try:
        for topo in topo_names:
            subset = names if topo == "one" else [n for n in names if n in SUBSET_WORKLOADS]
            if args.quick and topo != "one" and not args.workloads:
                # About a minute in all: the multi-process topologies get the core three.
                subset = [n for n in subset if n in ("put", "range-l", "watch")]
            # The proxy's reason to exist is fan-out: 10,000 watchers on one range go through it
            # too (issue 5 compares etcd grpc-proxy and meridian-proxy there).
            if topo == "proxy" and "watch-10k" in names:
                subset.append("watch-10k")
            outcome = run_topology(topo, subset, args, bins, workdir, runs, summary)
            if outcome:
                (skipped if outcome[0] == "skipped" else failed)[topo] = outcome[1]
        mem_rows = []
        if not args.no_memory:
            log("== memory")
            mem_rows = memory_steps(args, bins, workdir)
        os.makedirs(args.out_dir, exist_ok=True)
        write_csvs(args.out_dir, runs, summary)
        chart = write_chart(args.out_dir, summary, workdir)
    finally:
        if not args.keep_tmp:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"kept {workdir}")
    elapsed = time.monotonic() - started

    info = machine_info()
    env_prefix = "".join(f"{k}={shlex.quote(os.environ[k])} " for k in
                         ("MERIDIAN_NODE_BIN", "MERIDIAN_BENCH_BIN", "MERIDIAN_PROXY_BIN")
                         if os.environ.get(k))
    command = env_prefix + "python3 bench/compare.py" + "".join(
        f" {shlex.quote(a)}" for a in sys.argv[1:])
    table = render_table(summary, skipped, topo_names, failed)
    memory = render_memory(mem_rows) if mem_rows else "Skipped (--no-memory)."
    print()
    print(table)
    if mem_rows:
        print(memory)
    print(f"\n(total {elapsed:.0f} s)")

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    defs = workloads(args)
    workload_lines = "\n".join(
        f"- `{n}`: `meridian-bench {' '.join(defs[n][0])}"
        f"{' --duration ' + str(args.duration) if defs[n][1] else ''}`" for n in names)
    etcd_version = version([args.etcd_bin, "--version"])
    node_version = version([args.node_bin, "--version"])
    doc = f"""# Benchmarks: Meridian vs etcd

Generated {now} by `{command}` in {elapsed:.0f} s.

- Machine: {info['nproc']} CPUs ({info['cpu']}), {info['mem_gib']:.1f} GiB memory,
  Linux {info['kernel']}.
- Versions: `{etcd_version}` (Debian's etcd), `{node_version}`.
- Both servers run on 127.0.0.1 with the same flags (fresh data dir,
  `--heartbeat-interval {HEARTBEAT_MS} --election-timeout {ELECTION_MS}`,
  `--quota-backend-bytes {QUOTA_BYTES}`, `--log-level warn`, etcd's `--initial-cluster*` flags),
  and share the CPUs with the load generator. Three members: every member on its own ports and
  data dir, loaded only once all are healthy and agree on a leader; meridian-bench gets all three
  client endpoints and spreads its connections over them round-robin. Behind a proxy: one member
  behind its own proxy (etcd behind `etcd grpc-proxy start`, meridian-node behind
  meridian-proxy); meridian-bench talks to the proxy's address only.
- Each workload ran {args.reps} times per server, alternating etcd, Meridian, etcd, Meridian, ...;
  the table shows medians. Ratio = Meridian / etcd: above 1 is better for throughput, below 1 is
  better for p99 latency and memory. Peak RSS is the sum of VmHWM over the servers' processes
  (all three members in the three-member topology), reset before each run; behind a proxy, the
  member's and the proxy's peak RSS are in separate columns.
- Throughput is requests/s, except for the watch workloads, where it is events delivered per second
  and p99 is the put-to-delivery latency.

## Throughput, p99 latency and peak RSS

{table}
![Meridian / etcd ratios](benchmarks.png)

## Memory

Growth of the server's VmRSS on a fresh single member, measured by `meridian-bench --rss-pid`.

{memory}

## Workloads

{workload_lines}

Raw figures: [benchmarks.csv](benchmarks.csv) (medians) and
[benchmarks-runs.csv](benchmarks-runs.csv) (every run). Regenerate with `{command}`
after building (see bench/README.md).
"""
    if not chart:
        doc = doc.replace("![Meridian / etcd ratios](benchmarks.png)\n",
                          "(no chart: gnuplot missing)\n")
    with open(os.path.join(args.out_dir, "benchmarks.md"), "w") as f:
        f.write(doc)
    log(f"wrote {os.path.join(args.out_dir, 'benchmarks.md')}")
    failed_runs = sum(s["failed_runs"] for s in summary)
    return 1 if failed_runs or failed else 0


if __name__ == "__main__":
    sys.exit(main())
