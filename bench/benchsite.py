"""Helpers the benches share: a throw-away site on loopback, enrolled identities, the
processes a bench starts (each stopped at the end, whatever happens), and readings from
/proc. Python's standard library only.
"""
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
BUILD = os.path.abspath(os.environ.get("SITEWARD_BUILD", os.environ.get("BUILD",
                                                                         os.path.join(ROOT, "build"))))


def prog(name):
    path = os.path.join(BUILD, name)
    if not os.access(path, os.X_OK):
        sys.exit(f"{os.path.basename(sys.argv[0])}: {path} is missing; build first "
                 f"(make, or ninja -C {BUILD})")
    return path


def say(msg):
    print(msg, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for(pred, timeout, what, step=0.1):
    """Polls pred() until it is true; gives up after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)


def ncores():
    return len(os.sched_getaffinity(0))


def pinned(cpu, argv):
    """argv under `taskset -c cpu` (taskset execs, so the pid is the program's)."""
    if cpu is None or ncores() < 2 or not shutil.which("taskset"):
        return argv
    return ["taskset", "-c", str(cpu)] + argv


class Bench:
    """A temporary folder and the processes started in it; close() stops them all
    (SIGTERM, a bounded wait, SIGKILL) and removes the folder. SIGTERM and SIGHUP end
    the bench through the same path as Ctrl-C."""

    def __init__(self, prefix):
        self.tmp = tempfile.mkdtemp(prefix=prefix)
        self.procs = []
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame):
        raise SystemExit(128 + signum)

    def path(self, *parts):
        return os.path.join(self.tmp, *parts)

    def start(self, argv, log, cpu=None):
        logf = open(self.path(log), "ab")
        p = subprocess.Popen(pinned(cpu, argv), stdout=logf, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        logf.close()
        p.log_path = self.path(log)
        self.procs.append(p)
        return p

    def stop(self, p, timeout=10):
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            self.stop(p, 5)
        shutil.rmtree(self.tmp, ignore_errors=True)


class Site:
    """A site server in bench.tmp/site, on a free loopback port."""

    def __init__(self, bench, heartbeat, code="BEN"):
        self.bench = bench
        self.dir = bench.path("site")
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.server = None
        self.env = dict(os.environ, SITEWARD_SITE=self.dir)
        run([prog("siteward-server"), "init", "--dir", self.dir, "--site-code", code,
             "--listen", f"127.0.0.1:{self.port}", "--heartbeat", str(heartbeat)], self.env)

    def set_conf(self, dotted, value):
        """Adds or replaces a 'section.key' setting in siteward.conf."""
        section, key = dotted.strip().split(".", 1)
        path = os.path.join(self.dir, "siteward.conf")
        with open(path) as f:
            lines = f.read().splitlines()
        out, cur, done = [], None, False
        for line in lines:
            s = line.strip()
            if s.startswith("[") and s.endswith("]"):
                if cur == section and not done:
                    out.append(f"{key} = {value}")
                    done = True
                cur = s[1:-1]
            elif cur == section and s.split("=")[0].strip() == key:
                line, done = f"{key} = {value}", True
            out.append(line)
        if not done:
            if cur != section:
                out.append(f"[{section}]")
            out.append(f"{key} = {value}")
        with open(path, "w") as f:
            f.write("\n".join(out) + "\n")

    def start(self, cpu=None):
        self.server = self.bench.start([prog("siteward-server"), "--dir", self.dir],
                                       "server.log", cpu)
        wait_for(self._ready, 20, "the site server to answer")
        return self.server

    def _ready(self):
        if self.server.poll() is not None:
            raise RuntimeError("siteward-server exited:\n" + tail(self.server.log_path))
        return subprocess.run([prog("siteward"), "--timeout", "2", "systems"], env=self.env,
                              capture_output=True, timeout=10).returncode == 0

    def cli(self, *args):
        return run([prog("siteward"), "--timeout", "10"] + list(args), self.env)

    def enroll(self, name, listen=None):
        """Enrolls an identity with a fresh token; returns its folder (agent.crt, agent.key,
        ca.crt, agent.conf). The agent itself is not started."""
        adir = self.bench.path("agents", name)
        os.makedirs(os.path.dirname(adir), exist_ok=True)
        token = self.cli("token", "create").strip()
        run([prog("siteward-agent"), "init", "--dir", adir, "--server", self.url, "--token",
             token, "--name", name, "--listen", listen or f"127.0.0.1:{free_port()}"],
            self.env)
        return adir

    def systems(self):
        return json.loads(self.cli("--json", "systems"))["systems"]

    def log_problems(self):
        """Warning and error lines of the server's log."""
        with open(self.server.log_path, errors="replace") as f:
            return [l.rstrip() for l in f if " warn:" in l or " error:" in l]


def run(argv, env=None, timeout=60):
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:2])} failed: {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout


def tail(path, n=20):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def heartbeat_body(address):
    """A heartbeat as agent/heartbeat.c sends it, with this machine's facts
    (agent/facts.c)."""
    u = os.uname()
    osname = u.sysname
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    osname = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    page = os.sysconf("SC_PAGE_SIZE")
    vfs = os.statvfs("/")
    with open("/proc/uptime") as f:
        uptime = int(float(f.read().split()[0]))
    facts = {
        "os": osname, "kernel": u.release, "arch": platform.machine(),
        "hostname": socket.gethostname(), "cpus": os.cpu_count(),
        "memory_total": os.sysconf("SC_PHYS_PAGES") * page,
        "memory_available": os.sysconf("SC_AVPHYS_PAGES") * page,
        "uptime": uptime, "disk_free": vfs.f_bavail * vfs.f_frsize, "agent_uptime": 3600,
    }
    return json.dumps({"version": "0.1.0", "address": address, "facts": facts},
                      separators=(",", ":"))


# -- /proc readings -----------------------------------------------------------------

def status_kib(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def smaps_rollup(pid):
    """Rss, Pss, Private_Dirty, … of a process, in KiB."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1])
    return out


def smaps_by_mapping(pid):
    """Per mapped object (a file's basename, [heap], [stack], [anon] …): KiB of Rss, Pss,
    Private_Clean, Private_Dirty, Shared_Clean, Shared_Dirty, summed over its mappings."""
    groups, cur = {}, None
    keys = ("Rss", "Pss", "Private_Clean", "Private_Dirty", "Shared_Clean", "Shared_Dirty")
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            if "-" in parts[0] and not parts[0].endswith(":"):
                name = parts[5] if len(parts) >= 6 else "[anon]"
                if name.startswith("/"):
                    name = os.path.basename(name)
                cur = groups.setdefault(name, dict.fromkeys(keys, 0))
                cur["_path"] = parts[5] if len(parts) >= 6 else ""
            elif cur is not None and parts[0].rstrip(":") in keys:
                cur[parts[0].rstrip(":")] += int(parts[1])
    return groups


def established(port):
    """Established TCP connections whose local port is `port` (the server's side)."""
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] == "01" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                        n += 1
        except OSError:
            pass
    return n


def loadavg():
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def busy_elsewhere(exclude_pids, seconds=1.0):
    """CPU used by every process but `exclude_pids` over `seconds`, in % of one core: how
    busy the machine is with other people's work."""
    def total():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        return sum(v) - v[3] - v[4]

    def mine():
        t = 0
        for pid in exclude_pids:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    s = f.read()
                fields = s[s.rindex(")") + 2:].split()
                t += int(fields[11]) + int(fields[12])
            except (OSError, ValueError):
                pass
        return t

    t0, m0 = total(), mine()
    time.sleep(seconds)
    t1, m1 = total(), mine()
    hz = os.sysconf("SC_CLK_TCK")
    return max(0.0, ((t1 - t0) - (m1 - m0)) / hz / seconds * 100)
