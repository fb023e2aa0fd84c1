#!/usr/bin/env python3
"""Runs the same postbox-bench scenarios against Postbox and RabbitMQ's STOMP plugin on
this machine, alternating runs, and prints one table of medians and ratios.

It starts what it needs on loopback (Postbox from this workspace, built in release
mode; RabbitMQ from Debian's rabbitmq-server with rabbitmq_stomp, in a private node and
data directory) and stops it at the end.

Usage: scripts/compare.py [--runs 3] [--duration 10] [--brokers postbox,rabbitmq]
                          [--scenarios fanout-10,fanout-100,latency-10,queue-ack,queue-auto]
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# name -> (postbox-bench arguments, figure to compare, unit, higher is better)
SCENARIOS = {
    "fanout-10": (["fanout", "--publishers", "1", "--subscribers", "10"],
                  "delivered_per_sec", "deliveries/s", True),
    "fanout-100": (["fanout", "--publishers", "1", "--subscribers", "100"],
                   "delivered_per_sec", "deliveries/s", True),
    "latency-10": (["fanout", "--publishers", "1", "--subscribers", "10", "--rate", "1000"],
                   "p99_us", "p99 us", False),
    "queue-ack": (["queue", "--producers", "2", "--consumers", "2", "--ack", "client-individual"],
                  "delivered_per_sec", "msgs/s", True),
    "queue-auto": (["queue", "--producers", "2", "--consumers", "2", "--ack", "auto"],
                   "delivered_per_sec", "msgs/s", True),
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, timeout, process=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class Postbox:
    name = "postbox"
    credentials = []

    def start(self):
        binary = ROOT / "target" / "release" / "postbox"
        self.process = subprocess.Popen(
            [str(binary), "--listen", "127.0.0.1:0", "--log-level", "warn"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for line in self.process.stdout:
            parts = line.split()
            if parts[:2] == ["listening", "stomp"]:
                self.addr = parts[2]
            if parts == ["ready"]:
                return
        raise RuntimeError("postbox did not start")

    def rss_kib(self):
        return read_rss(self.process.pid)

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)


class RabbitMQ:
    name = "rabbitmq"
    credentials = ["--login", "guest", "--passcode", "guest", "--host", "/"]

    def start(self):
        if not shutil.which("rabbitmq-server"):
            raise RuntimeError("rabbitmq-server is not installed (apt-get install -y rabbitmq-server)")
        self.dir = tempfile.mkdtemp(prefix="postbox-compare-rabbit-")
        for sub in ("mnesia", "log"):
            (Path(self.dir) / sub).mkdir()
        # Debian's wrapper may run the node as the rabbitmq user.
        for path in [Path(self.dir), *Path(self.dir).iterdir()]:
            path.chmod(0o777)
        stomp = free_port()
        conf = Path(self.dir) / "rabbitmq.conf"
        conf.write_text(
            f"listeners.tcp.default = 127.0.0.1:{free_port()}\n"
            f"stomp.listeners.tcp.1 = 127.0.0.1:{stomp}\n"
            "loopback_users = none\n")
        (Path(self.dir) / "enabled_plugins").write_text("[rabbitmq_stomp].\n")
        self.node = f"postbox-compare-{os.getpid()}@localhost"
        env = dict(os.environ,
                   RABBITMQ_NODENAME=self.node,
                   RABBITMQ_CONFIG_FILE=str(conf.with_suffix("")),
                   RABBITMQ_ENABLED_PLUGINS_FILE=str(Path(self.dir) / "enabled_plugins"),
                   RABBITMQ_MNESIA_BASE=str(Path(self.dir) / "mnesia"),
                   RABBITMQ_LOG_BASE=str(Path(self.dir) / "log"),
                   RABBITMQ_DIST_PORT=str(free_port()),
                   RABBITMQ_NODE_IP_ADDRESS="127.0.0.1")
        self.env = env
        self.process = subprocess.Popen(["rabbitmq-server"], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(stomp, 120, self.process)
        self.addr = f"127.0.0.1:{stomp}"

    def rss_kib(self):
        # The Erlang VM is a child of the rabbitmq-server wrapper script.
        out = subprocess.run(["pgrep", "-f", f"beam.*{self.node}"], capture_output=True, text=True)
        pids = [int(p) for p in out.stdout.split()]
        return sum(read_rss(p) for p in pids) if pids else 0

    def stop(self):
        subprocess.run(["rabbitmqctl", "-n", self.node, "stop"], env=self.env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def read_rss(pid):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_scenario(broker, scenario, duration):
    args, figure, _, _ = SCENARIOS[scenario]
    bench = ROOT / "target" / "release" / "postbox-bench"
    command = [str(bench), *args, "--addr", broker.addr, *broker.credentials,
               "--duration", str(duration), "--warmup", "2", "--json"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=duration + 120)
    if result.returncode != 0:
        return None, result.stderr.strip()
    report = json.loads(result.stdout)
    value = report["latency_us"]["p99"] if figure == "p99_us" else report[figure]
    if report.get("duplicates") or report.get("missing"):
        return None, f"duplicates {report.get('duplicates')} missing {report.get('missing')}"
    return value, None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--brokers", default="postbox,rabbitmq")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    options = parser.parse_args()

    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "postbox-broker", "-p", "postbox-bench"],
                   cwd=ROOT, check=True)
    available = {"postbox": Postbox, "rabbitmq": RabbitMQ}
    brokers = [available[name]() for name in options.brokers.split(",")]
    scenarios = options.scenarios.split(",")
    results = {(b.name, s): [] for b in brokers for s in scenarios}
    errors = []
    started = []
    try:
        for broker in brokers:
            broker.start()
            started.append(broker)
            print(f"# {broker.name} on {broker.addr}", file=sys.stderr)
        for run in range(options.runs):
            for scenario in scenarios:
                for broker in brokers:
                    value, error = run_scenario(broker, scenario, options.duration)
                    if error:
                        errors.append(f"{broker.name} {scenario} run {run + 1}: {error}")
                    else:
                        results[(broker.name, scenario)].append(value)
                    print(f"# run {run + 1} {scenario} {broker.name}: {value if error is None else error}",
                          file=sys.stderr)
    finally:
        for broker in started:
            broker.stop()

    names = [b.name for b in brokers]
    header = ["scenario", "unit", *names]
    if len(names) > 1:
        header += [f"{names[0]}/{n}" for n in names[1:]]
    rows = []
    for scenario in scenarios:
        _, _, unit, higher = SCENARIOS[scenario]
        medians = [statistics.median(results[(n, scenario)]) if results[(n, scenario)] else None for n in names]
        row = [scenario, unit] + [f"{m:,.0f}" if m is not None else "failed" for m in medians]
        for other in medians[1:]:
            if medians[0] and other:
                ratio = medians[0] / other if higher else other / medians[0]
                row.append(f"{ratio:.1f}x")
            else:
                row.append("-")
        rows.append(row)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"medians of {options.runs} runs of {options.duration:g}s; ratios > 1 mean {names[0]} is better")
    for row in [header, *rows]:
        print("  ".join(str(cell).rjust(w) for cell, w in zip(row, widths)))
    for error in errors:
        print(f"error: {error}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
