#!/usr/bin/env python3
"""Runs the same postbox-bench scenarios against Postbox, RabbitMQ's STOMP plugin and
ActiveMQ on this machine, alternating runs, and prints one table of medians and ratios.

It starts what it needs on loopback, each in a private directory, and stops it at the
end: Postbox from this workspace (release build); RabbitMQ from Debian's
rabbitmq-server with rabbitmq_stomp and rabbitmq_web_stomp; ActiveMQ from Debian's
activemq (its STOMP connector; Debian's build has no WebSocket transport, so the ws
rows say n/a for it). The brokers not being measured are paused (SIGSTOP), so each
measurement has the machine to itself, and each broker is restarted before its
connections run, so that memory growth is measured from a fresh process.

Usage: scripts/compare.py [--runs 3] [--duration 10] [--brokers postbox,rabbitmq,activemq]
                          [--scenarios fanout-10,...]   (see SCENARIOS below)
                          [--baseline path/to/an/older/postbox]

With --brokers postbox --baseline BINARY it compares this workspace's build with another
(for example the previous commit's), run for run, which is how a refactoring shows that
it changed no figure beyond noise.
"""

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def delivered(report):
    return report["delivered_per_sec"]


def p99(report):
    return report["latency_us"]["p99"]


def kib_per_connection(report):
    value = report.get("rss_bytes_per_connection")
    return value / 1024 if value is not None else None


# Scenario name -> (postbox-bench arguments, over WebSocket, rows). Each row is
# (row name, figure from the JSON report, unit, higher is better).
SCENARIOS = {
    "fanout-10": (["fanout", "--publishers", "1", "--subscribers", "10"], False,
                  [("fanout-10", delivered, "deliveries/s", True)]),
    "fanout-100": (["fanout", "--publishers", "1", "--subscribers", "100"], False,
                   [("fanout-100", delivered, "deliveries/s", True)]),
    "latency-10": (["fanout", "--publishers", "1", "--subscribers", "10", "--rate", "1000"], False,
                   [("latency-10 (1k msg/s)", p99, "p99 us", False)]),
    "queue-ack": (["queue", "--producers", "2", "--consumers", "2", "--ack", "client-individual"], False,
                  [("queue-ack", delivered, "msgs/s", True)]),
    "queue-auto": (["queue", "--producers", "2", "--consumers", "2", "--ack", "auto"], False,
                   [("queue-auto", delivered, "msgs/s", True)]),
    "fanout-10-ws": (["fanout", "--publishers", "1", "--subscribers", "10"], True,
                     [("fanout-10 over ws", delivered, "deliveries/s", True)]),
    "latency-10-ws": (["fanout", "--publishers", "1", "--subscribers", "10", "--rate", "1000"], True,
                      [("latency-10 over ws", p99, "p99 us", False)]),
    "connections": (["connections", "--count", "10000", "--broadcasts", "5"], False,
                    [("10k idle: opened", lambda r: r["connects_per_sec"], "conn/s", True),
                     ("10k idle: memory", kib_per_connection, "KiB/conn", False),
                     ("10k idle: broadcast", lambda r: r["broadcast_ms_median"], "ms to last", False)]),
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
    credentials = []

    def __init__(self, binary=None, name="postbox", extra=()):
        # Another build (`--baseline`) runs under its own name beside this workspace's;
        # `extra` are more options for it (`--postbox-args`, `--baseline-args`).
        self.binary = Path(binary) if binary else ROOT / "target" / "release" / "postbox"
        self.name = name
        self.extra = list(extra)

    def start(self):
        self.process = subprocess.Popen(
            [str(self.binary), "--listen", "127.0.0.1:0", "--ws-listen", "127.0.0.1:0",
             "--max-connections", "20000", "--log-level", "warn", *self.extra],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for line in self.process.stdout:
            parts = line.split()
            if parts[:2] == ["listening", "stomp"]:
                self.addr = parts[2]
            if parts[:2] == ["listening", "ws"]:
                self.ws_addr = parts[2]
            if parts == ["ready"]:
                return
        raise RuntimeError("postbox did not start")

    def pid(self):
        return self.process.pid

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)


class RabbitMQ:
    name = "rabbitmq"
    credentials = ["--login", "guest", "--passcode", "guest", "--host", "/"]

    def start(self):
        # The free ports are picked before the node binds them, so another process can
        # take one meanwhile (the node then refuses to start): try again with new ones.
        for attempt in range(3):
            try:
                return self.start_once()
            except RuntimeError as error:
                if attempt == 2:
                    raise
                print(f"# rabbitmq did not start, trying again: {str(error)[:200]}", file=sys.stderr)

    def start_once(self):
        if not shutil.which("rabbitmq-server"):
            raise RuntimeError("rabbitmq-server is not installed (apt-get install -y rabbitmq-server)")
        self.dir = tempfile.mkdtemp(prefix="postbox-compare-rabbit-")
        for sub in ("mnesia", "log"):
            (Path(self.dir) / sub).mkdir()
        # Debian's wrapper may run the node as the rabbitmq user.
        for path in [Path(self.dir), *Path(self.dir).iterdir()]:
            path.chmod(0o777)
        stomp, web_stomp = free_port(), free_port()
        conf = Path(self.dir) / "rabbitmq.conf"
        conf.write_text(
            f"listeners.tcp.default = 127.0.0.1:{free_port()}\n"
            f"stomp.listeners.tcp.1 = 127.0.0.1:{stomp}\n"
            f"web_stomp.tcp.ip = 127.0.0.1\n"
            f"web_stomp.tcp.port = {web_stomp}\n"
            # Binary frames: the bench's bodies are not UTF-8 text.
            "web_stomp.ws_frame = binary\n"
            "loopback_users = none\n")
        (Path(self.dir) / "enabled_plugins").write_text("[rabbitmq_stomp,rabbitmq_web_stomp].\n")
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
        self.output = Path(self.dir) / "server.out"
        with open(self.output, "w") as output:
            self.process = subprocess.Popen(rabbitmq_command(), env=env,
                                            stdout=output, stderr=subprocess.STDOUT)
        try:
            wait_for_port(stomp, 120, self.process)
        except RuntimeError as error:
            tail = self.output.read_text()[-2000:]
            if self.process.poll() is None:
                self.process.kill()
            shutil.rmtree(self.dir, ignore_errors=True)
            raise RuntimeError(f"rabbitmq-server: {error}\n{tail}") from error
        wait_for_port(web_stomp, 60, self.process)
        self.addr = f"127.0.0.1:{stomp}"
        self.ws_addr = f"127.0.0.1:{web_stomp}"

    def pid(self):
        # The Erlang VM is a descendant of the rabbitmq-server wrapper scripts.
        return descendant(self.process.pid, "beam.smp")

    def stop(self):
        subprocess.run(["rabbitmqctl", "-n", self.node, "stop"], env=self.env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class ActiveMQ:
    name = "activemq"
    credentials = []
    JAR = Path("/usr/share/activemq/bin/activemq.jar")

    def start(self):
        if not self.JAR.exists() or not shutil.which("java"):
            raise RuntimeError("activemq is not installed (apt-get install -y activemq)")
        self.dir = Path(tempfile.mkdtemp(prefix="postbox-compare-activemq-"))
        conf, data = self.dir / "conf", self.dir / "data"
        conf.mkdir()
        data.mkdir()
        stomp = free_port()
        # Debian's stock broker definition (KahaDB store, no JMX) with a STOMP connector.
        stock = Path("/etc/activemq/instances-available/main")
        xml = (stock / "activemq.xml").read_text()
        connectors = (f'<transportConnector name="openwire" uri="tcp://127.0.0.1:{free_port()}"/>'
                      f'<transportConnector name="stomp" uri="stomp://127.0.0.1:{stomp}"/>')
        xml = re.sub(r"<transportConnectors>.*?</transportConnectors>",
                     f"<transportConnectors>{connectors}</transportConnectors>", xml, flags=re.S)
        (conf / "activemq.xml").write_text(xml)
        shutil.copy(stock / "log4j2.properties", conf)
        # The JVM options of Debian's /usr/share/activemq/activemq-options.
        self.process = subprocess.Popen(
            ["java", "-Xms512M", "-Xmx512M", "-Dorg.apache.activemq.UseDedicatedTaskRunner=true",
             "-Dactivemq.home=/usr/share/activemq", f"-Dactivemq.base={self.dir}",
             f"-Dactivemq.conf={conf}", f"-Dactivemq.data={data}", f"-Djava.io.tmpdir={data}",
             "-jar", str(self.JAR), "start", f"xbean:file:{conf / 'activemq.xml'}"],
            cwd=self.dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(stomp, 120, self.process)
        self.addr = f"127.0.0.1:{stomp}"
        self.ws_addr = None

    def pid(self):
        return self.process.pid

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def rabbitmq_command():
    """How to start rabbitmq-server with as many file descriptors as this shell may open.

    Run as root, Debian's wrapper switches to the rabbitmq user with `su`, whose PAM
    session drops the soft open-files limit back to 1024; RabbitMQ then raises its file
    descriptor alarm and stops accepting at about 900 connections. Debian's systemd unit
    sets a high limit, so the fair comparison does the same: switch user ourselves and
    raise the soft limit to the hard one before starting the node.
    """
    import pwd
    import resource
    try:
        pwd.getpwnam("rabbitmq")
    except KeyError:
        return ["rabbitmq-server"]
    if os.geteuid() != 0:
        return ["rabbitmq-server"]
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    limit = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
    script = f"ulimit -n {limit} && cd /var/lib/rabbitmq && exec /usr/lib/rabbitmq/bin/rabbitmq-server"
    return ["su", "rabbitmq", "-s", "/bin/sh", "-c", script]


def descendant(root, name):
    """The pid of the first process called `name` under `root`, or None."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm = text[text.index("(") + 1:text.rindex(")")]
        ppid = int(text[text.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append((int(stat.parent.name), comm))
    todo = [root]
    while todo:
        for pid, comm in children.get(todo.pop(), []):
            if comm == name:
                return pid
            todo.append(pid)
    return None


def set_running(broker, running):
    """Pauses (SIGSTOP) or resumes (SIGCONT) a broker's server process, so that the
    brokers not being measured take no CPU from the one that is."""
    pid = broker.pid()
    if pid:
        os.kill(pid, signal.SIGCONT if running else signal.SIGSTOP)


def run_scenario(broker, scenario, duration):
    """One run: the figures of the scenario's rows, or an error."""
    args, ws, rows = SCENARIOS[scenario]
    if ws and not broker.ws_addr:
        return None, "n/a"
    bench = ROOT / "target" / "release" / "postbox-bench"
    command = [str(bench), *args, "--addr", broker.ws_addr if ws else broker.addr,
               *broker.credentials, "--json"]
    if ws:
        command.append("--ws")
    if args[0] == "connections":
        command += ["--broker-pid", str(broker.pid())]
    else:
        command += ["--duration", str(duration), "--warmup", "2"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=duration + 300)
    except subprocess.TimeoutExpired:
        return None, f"no result within {duration + 300:g} s"
    if result.returncode != 0:
        return None, result.stderr.strip()[-300:]
    report = json.loads(result.stdout)
    if report.get("duplicates") or report.get("missing"):
        return None, f"duplicates {report.get('duplicates')} missing {report.get('missing')}"
    return [figure(report) for _, figure, _, _ in rows], None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--brokers", default="postbox,rabbitmq,activemq")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--baseline", metavar="BINARY",
                        help="also run this postbox binary (an earlier commit's release build) as 'baseline'")
    parser.add_argument("--postbox-args", default="",
                        help="more options for this workspace's postbox, e.g. \"--presence /topic/bench.#\"")
    parser.add_argument("--baseline-args", default="", help="more options for the baseline")
    options = parser.parse_args()

    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "postbox-broker", "-p", "postbox-bench"],
                   cwd=ROOT, check=True)
    available = {"postbox": lambda: Postbox(extra=shlex.split(options.postbox_args)),
                 "rabbitmq": RabbitMQ, "activemq": ActiveMQ}
    brokers = [available[name]() for name in options.brokers.split(",")]
    if options.baseline:
        brokers.append(Postbox(options.baseline, "baseline", shlex.split(options.baseline_args)))
    scenarios = options.scenarios.split(",")
    results = {(b.name, s): [] for b in brokers for s in scenarios}
    not_applicable = set()
    errors = []
    started = []
    try:
        for broker in brokers:
            broker.start()
            started.append(broker)
            print(f"# {broker.name} on {broker.addr}", file=sys.stderr)
        for broker in brokers:
            set_running(broker, False)
        for run in range(options.runs):
            for scenario in scenarios:
                for broker in brokers:
                    if scenario == "connections":
                        # Memory growth is only meaningful from a fresh process: a
                        # broker that served earlier runs reuses the memory they freed.
                        set_running(broker, True)
                        started.remove(broker)
                        broker.stop()
                        broker.start()
                        started.append(broker)
                    set_running(broker, True)
                    try:
                        value, error = run_scenario(broker, scenario, options.duration)
                    finally:
                        set_running(broker, False)
                    if error == "n/a":
                        not_applicable.add((broker.name, scenario))
                    elif error:
                        errors.append(f"{broker.name} {scenario} run {run + 1}: {error}")
                    else:
                        results[(broker.name, scenario)].append(value)
                    print(f"# run {run + 1} {scenario} {broker.name}: {value if error is None else error}",
                          file=sys.stderr)
    finally:
        for broker in started:
            set_running(broker, True)
            broker.stop()

    names = [b.name for b in brokers]
    header = ["scenario", "unit", *names]
    if len(names) > 1:
        header += [f"{names[0]}/{n}" for n in names[1:]]
    rows = []
    for scenario in scenarios:
        for index, (row_name, _, unit, higher) in enumerate(SCENARIOS[scenario][2]):
            medians = []
            for n in names:
                values = [run[index] for run in results[(n, scenario)] if run[index] is not None]
                medians.append(statistics.median(values) if values else None)
            cells = []
            for n, m in zip(names, medians):
                if (n, scenario) in not_applicable:
                    cells.append("n/a")
                elif m is None:
                    cells.append("failed")
                else:
                    cells.append(f"{m:,.1f}" if m < 100 else f"{m:,.0f}")
            row = [row_name, unit, *cells]
            for other in medians[1:]:
                if medians[0] and other:
                    ratio = medians[0] / other if higher else other / medians[0]
                    row.append(f"{ratio:.2f}x" if ratio < 10 else f"{ratio:.1f}x")
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
