"""Helpers the benches share: a throw-away site on loopback, enrolled identities, the
processes a bench starts (each stopped at the end, whatever happens), and readings from
/proc. Python's standard library only.
"""
import http.client
import json
import os
import platform
import resource
import shutil
import signal
import socket
import ssl
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


def fixed_port(lo=20000, hi=32000):
    """A free loopback port outside the kernel's ephemeral range, for a server that starts
    some time after the port is chosen: no outgoing connection can take it meanwhile, as
    it could take a port free_port() handed out."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            eph_lo, eph_hi = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        eph_lo, eph_hi = 32768, 60999
    candidates = [p for p in range(lo, hi) if not eph_lo <= p <= eph_hi]
    start = os.getpid() % max(len(candidates), 1)
    for p in candidates[start:] + candidates[:start]:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
                return p
            except OSError:
                continue
    raise RuntimeError(f"no free port in {lo}-{hi} outside the ephemeral range")


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

    def __init__(self, prefix, dir=None):
        self.tmp = tempfile.mkdtemp(prefix=prefix, dir=dir)
        self.procs = []
        self.groups = []  # (pgid, pid): process groups started on our behalf
        self.finders = []  # called at close, after our processes stop: more groups
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

    def watch_group(self, pgid, pid):
        """A process group something we started started (an agent's service, which
        outlives its agent by design): close() ends it too, while `pid` is its leader."""
        if (pgid, pid) not in self.groups:
            self.groups.append((pgid, pid))

    def find_groups_at_close(self, fn):
        """fn() -> [(pgid, pid)], called by close() once our own processes have stopped:
        for groups started by them that may not have been watched yet (an agent that
        started a service just before the bench was interrupted)."""
        self.finders.append(fn)

    def _group_alive(self, pgid, pid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                s = f.read()
            fields = s[s.rindex(")") + 2:].split()
            return fields[0] != "Z" and int(fields[2]) == pgid
        except (OSError, ValueError):
            return False

    def stop_group(self, pgid, pid, timeout=10):
        if not self._group_alive(pgid, pid):
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pgid, sig)
            except OSError:
                return
            deadline = time.monotonic() + (timeout if sig == signal.SIGTERM else 5)
            while time.monotonic() < deadline and self._group_alive(pgid, pid):
                time.sleep(0.05)
            if not self._group_alive(pgid, pid):
                return

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            self.stop(p, 5)
        for fn in self.finders:
            try:
                for g in fn():
                    self.watch_group(*g)
            except (OSError, ValueError, KeyError, TypeError):
                pass
        for pgid, pid in self.groups:
            self.stop_group(pgid, pid, 5)
        if getattr(self, "keep", False):
            say(f"kept {self.tmp} (logs, journal); remove it when done")
        else:
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

    def enroll(self, name):
        """Enrolls an identity with a fresh token; returns its folder (agent.crt, agent.key,
        ca.crt, agent.conf). The agent itself is not started."""
        adir = self.bench.path("agents", name)
        os.makedirs(os.path.dirname(adir), exist_ok=True)
        token = self.cli("token", "create").strip()
        run([prog("siteward-agent"), "init", "--dir", adir, "--server", self.url, "--token",
             token, "--name", name], self.env)
        return adir

    def ticket(self, adir, name):
        """The user ticket an enrolled identity's agent issues to this process's user, as
        siteward-run gets it: the agent runs just long enough to answer on agent.sock.
        A client certificate's checkouts must carry one."""
        agent = self.bench.start([prog("siteward-agent"), "--dir", adir], f"ticket-{name}.log")
        sock = os.path.join(adir, "agent.sock")

        def read():
            if agent.poll() is not None:
                raise RuntimeError("siteward-agent exited:\n" + tail(agent.log_path))
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(5)
                    s.connect(sock)
                    data = b""
                    while not data.endswith(b"\n"):
                        chunk = s.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                return data.decode().strip()
            except OSError:
                return None

        try:
            return wait_for(read, 20, f"a user ticket from {name}'s agent")
        finally:
            self.bench.stop(agent)

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


# -- the reference server ----------------------------------------------------------

NGINX_CONF = """\
worker_processes 1;
worker_rlimit_nofile {nofile};
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections {conns}; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_client_certificate {ca};
        ssl_verify_client on;
        # siteward's servers issue no session tickets; neither does the reference.
        ssl_session_tickets off;
{locations}    }}
}}
"""


def start_nginx(bench, cert, key, ca, answers, cpu, files=None):
    """nginx as one unprivileged master-less process on a free loopback port, mutual TLS
    with `cert`/`key` and clients checked against `ca`, answering each path of `answers`
    (path -> JSON text) with 200 and that text, and each of `files` (path -> a file's
    path) with the file. Returns the process with .url set to https://127.0.0.1:PORT."""
    nginx = os.environ.get("NGINX", "/usr/sbin/nginx")
    if not os.access(nginx, os.X_OK):
        raise RuntimeError(f"{nginx} not found (Debian: nginx-light); set NGINX=PATH")
    d = bench.path("nginx")
    os.makedirs(d)
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nofile = min(nofile if nofile != resource.RLIM_INFINITY else 65536, 65536)
    port = free_port()
    locations = "".join(
        f"        location = {path} {{\n"
        f"            default_type application/json;\n"
        f"            return 200 '{body}';\n"
        f"        }}\n" for path, body in answers.items()) + "".join(
        f"        location = {path} {{\n"
        f"            default_type application/json;\n"
        f"            alias {file};\n"
        f"        }}\n" for path, file in (files or {}).items())
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write(NGINX_CONF.format(dir=d, port=port, cert=cert, key=key, ca=ca, nofile=nofile,
                                  conns=nofile - 64, locations=locations))
    p = bench.start([nginx, "-p", d, "-e", os.path.join(d, "error.log"), "-c",
                     os.path.join(d, "nginx.conf"), "-g", "daemon off; master_process off;"],
                    "nginx.out", cpu)

    def ready():
        if p.poll() is not None:
            raise RuntimeError("nginx exited:\n" + tail(p.log_path) +
                               tail(os.path.join(d, "error.log")))
        return port_open(port)

    wait_for(ready, 10, "nginx to listen")
    p.url = f"https://127.0.0.1:{port}"
    return p


def https_json(port, method, path, cert, key, ca, body=None, timeout=5, headers=None):
    """One mutual-TLS request to 127.0.0.1:port; returns (status, parsed JSON or None)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    ctx.check_hostname = False
    ctx.load_cert_chain(cert, key)
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        h = dict(headers or {})
        if data:
            h["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=h)
        r = conn.getresponse()
        text = r.read()
        try:
            return r.status, json.loads(text)
        except ValueError:
            return r.status, None
    finally:
        conn.close()


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


def cpu_us(pid):
    """CPU time of a whole process in microseconds: summed per-thread schedstat run time
    (nanoseconds), /proc/PID/stat where there is none; None if it is gone."""
    try:
        total = 0
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        return total // 1000
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
        fields = s[s.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) * 1000000 // os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None


def fs_type(path):
    """The file system type holding `path` (from /proc/self/mounts), e.g. ext4, tmpfs."""
    path = os.path.realpath(path)
    best, kind = "", "?"
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                mnt = parts[1].replace("\\040", " ")
                if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                    best, kind = mnt, parts[2]
    except OSError:
        pass
    return kind


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
