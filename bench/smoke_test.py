#!/usr/bin/env python3
"""bench_smoke: runs every meridian-bench mode briefly against a meridian-node.

Starts the node on free 127.0.0.1 ports with a temporary data dir, runs each mode with a tiny
--total, and checks that the JSON line parses and reports no errors (and, for the watch modes, no
lost, duplicated or reordered events). No time thresholds. The node is always killed: explicitly
on exit, and by PR_SET_PDEATHSIG should this script itself be killed.

Exit codes: 0 pass, 1 fail, 77 skipped (node binary not built).
"""
import argparse
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

PR_SET_PDEATHSIG = 1

MODES = [
    ["put", "--total", "200", "--clients", "4", "--conns", "2"],
    ["range", "--total", "200", "--clients", "4", "--key-space", "50"],
    ["range", "--consistency", "s", "--total", "200", "--key-space", "50"],
    ["txn-put", "--total", "100", "--txn-ops", "2", "--key-space", "20", "--clients", "2"],
    ["delete", "--total", "100", "--key-space", "100", "--clients", "2"],
    ["put", "--total", "100", "--clients", "2", "--rate", "500", "--sequential-keys",
     "--key-space", "100"],
    ["watch", "--watchers", "10", "--streams", "2", "--puts", "50", "--clients", "2"],
    ["watch-latency", "--watchers", "2", "--puts", "20", "--rate", "200"],
    ["lease-keepalive", "--total", "100", "--clients", "2"],
    ["k8s", "--total", "300", "--clients", "4", "--key-space", "100", "--watchers", "2",
     "--page-size", "10"],
    ["idle-watchers", "--watchers", "100", "--streams", "2", "--hold-ms", "50"],
]


def die_with_parent():
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, proc, timeout_s):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def start_node(node, tmp):
    """Starts the node; retries with new ports if one was taken meanwhile."""
    for attempt in range(3):
        client, peer = free_port(), free_port()
        data = os.path.join(tmp, f"data{attempt}")
        log = open(os.path.join(tmp, f"node{attempt}.log"), "wb")
        curl, purl = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
        proc = subprocess.Popen(
            [node, "--name", "smoke", "--data-dir", data,
             "--listen-client-urls", curl, "--advertise-client-urls", curl,
             "--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
             "--initial-cluster", f"smoke={purl}"],
            stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent,
            start_new_session=True)
        log.close()
        if wait_listening(client, proc, 15):
            return proc, client
        stop(proc)
    return None, None


def stop(proc):
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def check(mode_args, out, rc, err):
    """Returns a list of problems with one run."""
    if rc != 0:
        return [f"exit code {rc}: {err.strip()[-500:]}"]
    lines = [l for l in out.splitlines() if l.strip()]
    if not lines:
        return ["no JSON line on stdout"]
    try:
        r = json.loads(lines[-1])
    except json.JSONDecodeError as e:
        return [f"JSON does not parse ({e}): {lines[-1][:300]}"]
    problems = []
    if r.get("mode") != mode_args[0]:
        problems.append(f"mode is {r.get('mode')!r}")
    if r.get("error_count") != 0:
        problems.append(f"errors {r.get('errors')}: {r.get('first_error')}")
    if r.get("requests", 0) <= 0:
        problems.append("no request succeeded")
    for key in ("qps", "latency_ms", "errors", "elapsed_s"):
        if key not in r:
            problems.append(f"missing {key}")
    w = r.get("watch")
    if mode_args[0] in ("watch", "watch-latency", "idle-watchers"):
        if not w:
            problems.append("missing watch block")
        else:
            if w["watchers_created"] != w["watchers"]:
                problems.append(f"only {w['watchers_created']} of {w['watchers']} watchers")
            for k in ("lost", "duplicated", "out_of_order", "unexpected"):
                if w[k] != 0:
                    problems.append(f"watch {k}={w[k]}")
    return problems


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", required=True)
    ap.add_argument("--node", required=True)
    args = ap.parse_args()
    node = os.environ.get("MERIDIAN_NODE_BIN", args.node)
    if not os.access(node, os.X_OK):
        print(f"SKIP: {node} is not built")
        return 77
    tmp = tempfile.mkdtemp(prefix="meridian-bench-smoke-")
    proc = None
    failures = 0
    try:
        proc, port = start_node(node, tmp)
        if proc is None:
            print("FAIL: meridian-node did not start; logs:")
            for name in sorted(os.listdir(tmp)):
                if name.endswith(".log"):
                    print(open(os.path.join(tmp, name), errors="replace").read()[-2000:])
            return 1
        for mode_args in MODES:
            cmd = [args.bench, *mode_args, "--endpoints", f"127.0.0.1:{port}", "--progress", "0",
                   "--rss-pid", str(proc.pid)]
            try:
                res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
                problems = check(mode_args, res.stdout, res.returncode, res.stderr)
            except subprocess.TimeoutExpired:
                problems = ["timed out after 60 s"]
            name = " ".join(mode_args)
            if problems:
                failures += 1
                print(f"FAIL {name}: {'; '.join(problems)}")
            else:
                print(f"ok   {name}")
            if proc.poll() is not None:
                print(f"FAIL: meridian-node exited with {proc.returncode}")
                return 1
    finally:
        stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    print("PASS" if failures == 0 else f"{failures} mode(s) failed")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
