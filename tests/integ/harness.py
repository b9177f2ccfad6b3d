"""Runs real siteward programs on loopback for the integration tests.

A Site is a site server in a temporary folder; agents enroll with real tokens over
mutual TLS. Everything is driven from the outside, through the command line and the
HTTPS API, as an administrator would.
"""
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import http.client
import uuid

BUILD = os.environ.get("SITEWARD_BUILD", "build")
DB_URL = os.environ.get("SITEWARD_TEST_DB", "")  # a postgresql:// URL, or SQLite


def prog(name):
    return os.path.join(BUILD, name)


def script(name, *args):
    """A command line running one of the test programs in tests/integ/programs."""
    return " ".join([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "programs", name), *args])


def proc_state(pid):
    """The state letter of a process, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def pid_alive(pid):
    return proc_state(pid) not in (None, "Z", "X")


def processes():
    """(pid, state, ppid, pgid) of every process, from /proc."""
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        yield int(d), fields[0], int(fields[1]), int(fields[2])


def group_alive(pgid):
    """Whether any live process is in process group `pgid`."""
    return any(g == pgid and st not in ("Z", "X") for _, st, _, g in processes())


def has_child(pid, program):
    """Whether process `pid` has a child running `program` (its argv[0])."""
    for child, _, parent, _ in processes():
        if parent != pid:
            continue
        try:
            with open(f"/proc/{child}/cmdline", "rb") as f:
                if f.read().split(b"\0")[0].decode(errors="replace") == program:
                    return True
        except OSError:
            continue
    return False


def _below_ephemeral():
    """Ports below the kernel's ephemeral range: no outgoing connection is given one."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return (max(1024, low - 12000), low - 1) if low > 2048 else None


def free_port():
    """A port free now, for a program under test to listen on. A port from the
    ephemeral range could meanwhile be given to some outgoing connection, and the
    program would find it taken; one below that range is taken only by another pick."""
    span = _below_ephemeral()
    for _ in range(100 if span else 0):
        port = random.randint(*span)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_sockets(pid):
    """The TCP and UDP sockets process `pid` listens or is bound on, as /proc shows them
    ("tcp 0100007F:1F90"), whatever their address family."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        with open(f"/proc/{pid}/net/{proto}") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                # TCP: state 0A is LISTEN; UDP: any socket bound with no peer receives
                bound = (fields[3] == "0A" if proto.startswith("tcp")
                         else fields[2].endswith(":0000"))
                if bound and fields[9] in inodes:
                    found.append(f"{proto} {fields[1]}")
    return found


def wait_for(pred, timeout, what, step=0.05):
    """Polls pred() until it is true; fails the test after `timeout` seconds. The
    polls thin out, to a quarter second apart (or `step`, if longer): many predicates
    run the CLI, and a long wait that ran it twenty times a second kept a core busy
    starting programs (under ASan, most of a pass's processor time)."""
    deadline = time.monotonic() + timeout
    gap, most = step, max(step, 0.25)
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(gap)
        gap = min(most, gap * 1.25)


def fresh_pg_database():
    """A new, empty database on the test PostgreSQL server, as a URL."""
    name = "sw_" + uuid.uuid4().hex[:12]
    subprocess.run(["psql", "-q", DB_URL, "-c", f"CREATE DATABASE {name}"], check=True,
                   capture_output=True, timeout=30)
    return DB_URL.rsplit("/", 1)[0] + "/" + name


SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def sanitizer_reports(folder):
    """What ASan, LSan or UBSan said in any log under `folder`."""
    found = []
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".log"):
            continue
        with open(os.path.join(folder, name), errors="replace") as f:
            text = f.read()
        for marker in SANITIZER_MARKERS:
            i = text.find(marker)
            if i >= 0:
                found.append(f"--- {name}:\n{text[max(0, i - 200):i + 3000]}")
                break
    return "\n".join(found)


class Proc:
    """A daemon under test, its stderr in a log file."""

    def __init__(self, argv, log, env=None):
        self.argv, self.log_path = argv, log
        self.logf = open(log, "ab")
        self.p = subprocess.Popen(argv, stdout=self.logf, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, env=env)

    @property
    def pid(self):
        return self.p.pid

    def alive(self):
        return self.p.poll() is None

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def signal(self, sig):
        if self.alive():
            os.kill(self.p.pid, sig)

    def stop(self, timeout=10):
        """SIGTERM, a bounded wait, then SIGKILL. Returns the exit status."""
        if self.alive():
            self.p.send_signal(signal.SIGCONT)
            self.p.terminate()
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        self.logf.close()
        return self.p.returncode

    def kill9(self):
        self.p.kill()
        self.p.wait(5)
        self.logf.close()


def set_conf(path, settings):
    """Adds or replaces 'section.key' settings in the configuration file at `path`."""
    with open(path) as f:
        lines = f.read().splitlines()
    for dotted, value in settings.items():
        section, key = dotted.split(".")
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
        lines = out
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


class Site:
    def __init__(self, heartbeat=1, extra_conf=None, site_code="TST", address="127.0.0.1",
                 sqlite=False):
        """`address`: where the server listens and agents reach it (loopback, unless a
        test's own network namespace has it elsewhere). `sqlite`: on SQLite even in the
        PostgreSQL pass (a server in a namespace of its own cannot reach that one's)."""
        self.tmp = tempfile.mkdtemp(prefix="siteward-it-")
        self.dir = os.path.join(self.tmp, "site")
        self.port = free_port()
        self.address = address
        self.url = f"https://{address}:{self.port}"
        self.agents = {}
        self.server = None
        args = [prog("siteward-server"), "init", "--dir", self.dir, "--site-code", site_code,
                "--listen", f"{address}:{self.port}", "--heartbeat", str(heartbeat)]
        if address != "127.0.0.1":
            args += ["--san", address]
        if DB_URL and not sqlite:
            args += ["--db", fresh_pg_database()]
        r = subprocess.run(args, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        # init puts the console on the next port, which may be another test's: a site
        # has one only when a test asks for it
        self.set_conf(dict({"console.listen": ""}, **(extra_conf or {})))

    def set_conf(self, settings):
        """Adds or replaces 'section.key' settings in siteward.conf."""
        set_conf(os.path.join(self.dir, "siteward.conf"), settings)

    # -- the server -------------------------------------------------------------
    def start(self):
        self.server = Proc([prog("siteward-server"), "--dir", self.dir],
                           os.path.join(self.tmp, "server.log"))
        wait_for(self._ready, 20, "the site server to answer")
        return self.server

    def _ready(self):
        if not self.server.alive():
            raise AssertionError("server exited:\n" + self.server.log())
        try:
            status, _ = self.api("GET", "/v1/site", timeout=2)
            return status == 200
        except OSError:
            return False

    def stop(self):
        if self.server:
            rc = self.server.stop()
            self.server = None
            return rc

    def close(self):
        for a in list(self.agents.values()):
            a.stop()
            a.kill_services()
        self.stop()
        reports = sanitizer_reports(self.tmp)
        keep = os.environ.get("SITEWARD_KEEP")  # a folder to keep the logs in, for a look
        if keep:
            os.makedirs(keep, exist_ok=True)
            shutil.copytree(self.tmp, os.path.join(keep, os.path.basename(self.tmp)),
                            ignore=shutil.ignore_patterns("*.pkg", "bin", "versions", "work"),
                            dirs_exist_ok=True)
        shutil.rmtree(self.tmp, ignore_errors=True)
        if reports:
            raise AssertionError("sanitizer reports in the programs' logs:\n" + reports)

    # -- talking to it ------------------------------------------------------------
    def cli(self, *args, timeout=60, check=True):
        """Runs the siteward CLI against this site."""
        env = dict(os.environ, SITEWARD_SITE=self.dir)
        r = subprocess.run([prog("siteward"), *args], capture_output=True, text=True,
                           timeout=timeout, env=env)
        if check:
            assert r.returncode == 0, f"siteward {' '.join(args)}: {r.stderr}"
        return r

    def cli_json(self, *args, **kw):
        r = self.cli(*args, "--json", **kw)
        return json.loads(r.stdout)

    # What the tests look at and set up goes through the API, as `siteward systems
    # --json` and `token create` would (they print the same): the tests of the CLI run
    # it, and a helper polled in a wait would otherwise start it hundreds of times a
    # pass (under ASan, a tenth of a second of processor time each).
    def systems(self):
        status, body = self.api("GET", "/v1/systems", timeout=30)
        assert status == 200, body
        return {s["name"]: s for s in body["systems"]}

    def token(self, ttl=None):
        status, body = self.api("POST", "/v1/tokens", {"ttl": int(ttl or 3600), "uses": 1},
                                timeout=30)
        assert status == 200, body
        return body["token"]

    def tls(self, cert=None, key=None, ca=None):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(ca or os.path.join(self.dir, "ca.crt"))
        ctx.check_hostname = False
        if "FAKETIME" in os.environ:
            # the test moved the clock of the programs it starts (libfaketime), and
            # their certificates start at the moved now; this process's clock is not
            # moved: OpenSSL's X509_V_FLAG_NO_CHECK_TIME, which Python does not name
            ctx.verify_flags |= 0x200000
        if cert:
            ctx.load_cert_chain(cert, key)
        return ctx

    def admin_tls(self):
        return self.tls(os.path.join(self.dir, "admin.crt"), os.path.join(self.dir, "admin.key"))

    def api(self, method, path, body=None, ctx=None, port=None, timeout=10, headers=None,
            raw=None):
        """One HTTPS request; returns (status, parsed JSON or raw text)."""
        conn = http.client.HTTPSConnection("127.0.0.1" if port else self.address, port or self.port,
                                           context=ctx or self.admin_tls(), timeout=timeout)
        try:
            data = raw if raw is not None else (json.dumps(body) if body is not None else None)
            conn.request(method, path, body=data, headers=headers or {})
            r = conn.getresponse()
            text = r.read().decode(errors="replace")
            try:
                return r.status, json.loads(text)
            except ValueError:
                return r.status, text
        finally:
            conn.close()

    # -- agents -------------------------------------------------------------------
    def enroll(self, name, token=None, start=True):
        a = Agent(self, name)
        r = a.init(token or self.token())
        assert r.returncode == 0, r.stderr
        if start:
            a.start()
        self.agents[name] = a
        return a

    def db_rows(self, table):
        """Rows of a table, read straight from the database, for integrity checks."""
        url = self._db_url()
        if url.startswith("postgres"):
            r = subprocess.run(["psql", "-At", url, "-c", f"SELECT * FROM {table} ORDER BY 1"],
                               capture_output=True, text=True, check=True, timeout=30)
            return r.stdout.splitlines()
        import sqlite3
        con = sqlite3.connect(url, timeout=10)
        try:
            return [repr(r) for r in con.execute(f"SELECT * FROM {table} ORDER BY 1")]
        finally:
            con.close()

    def db_fields(self, table):
        """Rows of a table as lists of strings, the same for either engine."""
        url = self._db_url()
        if url.startswith("postgres"):
            return [line.split("|") for line in self.db_rows(table)]
        import sqlite3
        con = sqlite3.connect(url, timeout=10)
        try:
            return [["" if v is None else str(v) for v in r]
                    for r in con.execute(f"SELECT * FROM {table} ORDER BY 1")]
        finally:
            con.close()

    def _db_url(self):
        with open(os.path.join(self.dir, "siteward.conf")) as f:
            for line in f:
                if line.strip().startswith("url"):
                    return line.split("=", 1)[1].strip()
        raise AssertionError("no database url")


class Agent:
    def __init__(self, site, name, env=None):
        """`env`: variables added to the environment of the agent and all it runs."""
        self.site, self.name = site, name
        self.env = dict(os.environ, **env) if env else None
        self.dir = os.path.join(site.tmp, "agent-" + name)
        self.meter_port = free_port()  # where its metering server listens, if it runs one
        self.proc = None

    def init(self, token, server=None, extra=()):
        r = subprocess.run(
            [prog("siteward-agent"), "init", "--dir", self.dir, "--server", server or self.site.url,
             "--token", token, "--name", self.name, *extra],
            capture_output=True, text=True, timeout=60, env=self.env)
        if r.returncode == 0:
            # Passive metering off: every agent on this machine sees every process on
            # it, and would count as its own the runs of other tests' programs (the
            # tests of passive metering turn it on, with a program name of their own).
            with open(os.path.join(self.dir, "agent.conf"), "a") as f:
                f.write(f"\n[meter]\nlisten = 127.0.0.1:{self.meter_port}\n"
                        "[metering]\npassive_interval_ms = 0\n")
        return r

    def set_conf(self, settings):
        """Adds or replaces 'section.key' settings in agent.conf (before it starts)."""
        set_conf(os.path.join(self.dir, "agent.conf"), settings)

    def start(self):
        self.proc = Proc([prog("siteward-agent"), "--dir", self.dir],
                         os.path.join(self.site.tmp, f"agent-{self.name}.log"), self.env)
        # an agent started again was heard of before: its socket, which it makes before
        # it first polls, says this one is up
        sock = os.path.join(self.dir, "agent.sock")
        wait_for(lambda: self._heard_of() and os.path.exists(sock), 20,
                 f"agent {self.name} to report")
        return self.proc

    def _heard_of(self):
        if not self.proc.alive():
            raise AssertionError(f"agent {self.name} exited:\n" + self.proc.log())
        s = self.site.systems().get(self.name)
        return s is not None and s["last_seen"] > 0

    def stop(self):
        if self.proc:
            self.proc.stop()
            self.proc = None

    def kill_services(self):
        """Services outlive their agent by design; a finished test ends them."""
        try:
            with open(os.path.join(self.dir, "services.state")) as f:
                state = json.load(f)
        except (OSError, ValueError):
            return
        for rec in state.values():
            if rec.get("pgid", 0) > 0:
                try:
                    os.killpg(rec["pgid"], signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def cert(self):
        return os.path.join(self.dir, "agent.crt"), os.path.join(self.dir, "agent.key")

    def ticket(self, timeout=5):
        """The user ticket the running agent issues to whoever connects (this process's
        user), as siteward-run gets it."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(os.path.join(self.dir, "agent.sock"))  # blocking: the backlog may be full
            s.settimeout(timeout)
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        return data.decode().strip()

    def ticket_header(self):
        return {"Siteward-Ticket": self.ticket()}

    def add_service(self, name, command, role="test", **settings):
        """Adds a [service.NAME] section to agent.conf (before the agent starts)."""
        with open(os.path.join(self.dir, "agent.conf"), "a") as f:
            f.write(f"\n[service.{name}]\nrole = {role}\ncommand = {command}\n")
            for k, v in settings.items():
                f.write(f"{k} = {v}\n")

    def service(self, name):
        """The service as the agent reports it (through the server)."""
        r = self.site.cli("service", "status", self.name, name, "--json", check=False)
        return json.loads(r.stdout) if r.returncode == 0 else None

    def services(self):
        return {s["name"]: s for s in self.site.systems()[self.name]["services"]}


def last_seen(site, name):
    """When the site server last handled a heartbeat of agent `name` (ms), or 0."""
    try:
        status, body = site.api("GET", f"/v1/systems/{name}", timeout=5)
    except OSError:
        return 0
    return body.get("last_seen", 0) if status == 200 else 0


def wait_heartbeats(site, name, count=1, after_ms=0, timeout=20):
    """Waits until the site server has handled `count` more heartbeats of agent `name`,
    and one stamped at `after_ms` or later; returns the last one's last_seen.

    An agent sends a heartbeat only after it has handled the reply to the one before, so
    from the second one on its own loop has run on for a heartbeat interval since this
    call: the program's own measure that time has passed, for tests that show something
    does not happen."""
    seen = last_seen(site, name)
    for i in range(count):
        seen = wait_for(lambda prev=seen: (lambda t: t if t > prev else 0)(
            last_seen(site, name)), timeout,
            f"the site server to hear heartbeat {i + 1} of {count} from {name} "
            f"(after last_seen {seen})", step=0.1)
    if seen < after_ms:
        seen = wait_for(lambda: (lambda t: t if t >= after_ms else 0)(last_seen(site, name)),
                        timeout + max(0, after_ms / 1000 - time.time()),
                        f"a heartbeat from {name} stamped at {after_ms} or later", step=0.1)
    return seen
