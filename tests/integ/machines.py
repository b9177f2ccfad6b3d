"""Machines of their own for the integration tests: each agent in its own network, PID
and mount namespaces, its root an overlay on this machine's Debian root, so that what
dpkg does on one is done on that one only, as on a real fleet.

The test process moves into a network namespace made for it (a bridge, the site
server's address on it); each machine has another, joined to the bridge by a veth pair.
Nothing listens outside the namespaces the test made. The machine's agent is PID 1 of
its own PID namespace: stopping it stops the machine, everything it ran with it.

    site_net = SiteNet("10.71.0")   # enters it; .close() leaves and removes it
    site = Site(address=site_net.server)
    m = Machine(site, site_net, "m1"); m.enroll(); m.start()

Needs root, iproute2's `ip`, util-linux's `unshare` and `nsenter`, and overlayfs."""
import ctypes
import os
import shutil
import signal
import subprocess
import uuid

from harness import Agent, Proc, prog, wait_for

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def why_not():
    """Why machines cannot be made here, or None. Beyond root and the tools, a network
    namespace is made and given an address, as each machine's is: some roots (a chroot
    whose /run is not the machine's) cannot, and say why."""
    if os.geteuid() != 0:
        return "machines of their own need root (network and mount namespaces)"
    for tool in ("ip", "unshare", "nsenter", "chroot"):
        if not shutil.which(tool):
            return f"machines of their own need {tool}"
    tag = uuid.uuid4().hex[:6]
    ns, end = f"swp{tag}", f"vp{tag}"
    try:
        ip("netns", "add", ns)
        ip("link", "add", end, "type", "veth", "peer", "name", "eth0", "netns", ns)
        ip("-n", ns, "addr", "add", "10.254.0.2/24", "dev", "eth0")
    except subprocess.CalledProcessError as e:
        return f"cannot make a machine's network here: {' '.join(e.cmd)}: " + \
            (e.stderr or b"").decode(errors="replace").strip()
    finally:
        subprocess.run(["ip", "link", "del", end], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
    return None


def _setns(fd):
    """This thread (and what it starts from now on) into the network namespace `fd`."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def ip(*args):
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


class SiteNet:
    """The test's own network: a namespace with a bridge at PREFIX.1, which this process
    (and all it starts from now on) is in until close()."""

    def __init__(self, prefix):
        self.tag = uuid.uuid4().hex[:6]
        self.prefix, self.server = prefix, f"{prefix}.1"
        self.name = f"sws{self.tag}"
        self.machines = []
        self.home = os.open("/proc/self/ns/net", os.O_RDONLY)
        ip("netns", "add", self.name)
        try:
            fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
            try:
                _setns(fd)
            finally:
                os.close(fd)
            ip("link", "set", "lo", "up")
            ip("link", "add", "br0", "type", "bridge")
            ip("addr", "add", f"{self.server}/24", "dev", "br0")
            ip("link", "set", "br0", "up")
        except BaseException:
            self.close()
            raise

    def add(self, n):
        """A namespace for machine number n (2 to 254), joined to the bridge; its name
        and address."""
        name, host_end = f"swm{self.tag}{n}", f"vh{self.tag}{n}"
        ip("netns", "add", name)
        self.machines.append(name)
        ip("link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", name)
        ip("link", "set", host_end, "master", "br0", "up")
        address = f"{self.prefix}.{n}"
        ip("-n", name, "addr", "add", f"{address}/24", "dev", "eth0")
        ip("-n", name, "link", "set", "eth0", "up")
        ip("-n", name, "link", "set", "lo", "up")
        return name, address

    def close(self):
        _setns(self.home)
        for name in self.machines + [self.name]:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
        os.close(self.home)


# Run by unshare in the machine's new mount and PID namespaces (as PID 1, which then
# becomes the agent): the overlay root, /proc of its own, /dev and /sys, the agent's
# folder shared with the test at the same path, then the agent.
_BOOT = r"""
set -e
m=$1 dir=$2
shift 2
mount -t overlay overlay -o lowerdir=/,upperdir=$m/upper,workdir=$m/work $m/root
mount -t proc proc $m/root/proc
mount --rbind /dev $m/root/dev
mount --rbind /sys $m/root/sys
mount -t tmpfs tmpfs $m/root/run
mkdir -p $m/root$dir
mount --bind $dir $m/root$dir
exec chroot $m/root "$@"
"""


def children(pid):
    """The processes whose parent is `pid`, as /proc has them now."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d))
    return out


def end(p):
    """Ends a command Machine.run started: nsenter forked it into the machine's PID
    namespace, so the command itself is nsenter's child."""
    if p.poll() is None:
        for pid in children(p.pid):
            os.kill(pid, signal.SIGKILL)
        p.kill()
    p.wait(10)


class MachineProc(Proc):
    """The machine: `unshare` with the agent as its one child. Signals go to the agent
    (PID 1 inside, so only those it handles, and SIGKILL and SIGSTOP)."""

    def __init__(self, argv, log, env=None):
        super().__init__(argv, log, env)
        self._agent = None

    @property
    def pid(self):
        if self._agent is None:
            self._agent = wait_for(lambda: (children(self.p.pid) or [None])[0], 10,
                                   "the machine's first process")
        return self._agent

    def signal(self, sig):
        if self.alive():
            os.kill(self.pid, sig)

    def stop(self, timeout=10):
        if self.alive():
            try:
                os.kill(self.pid, signal.SIGCONT)
                os.kill(self.pid, signal.SIGTERM)
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.p.wait(5)
            except ProcessLookupError:
                self.p.wait(5)
        self.logf.close()
        return self.p.returncode


class Machine(Agent):
    """An agent on a machine of its own: its files (agent.conf, logs, state) in its
    folder as any agent's; its root in <tmp>/machine-NAME/upper over this machine's."""

    def __init__(self, site, net, name, n):
        super().__init__(site, name)
        self.netns, self.address = net.add(n)
        self.mdir = os.path.join(site.tmp, f"machine-{name}")
        for d in ("upper", "work", "root"):
            os.makedirs(os.path.join(self.mdir, d))

    def enroll(self):
        r = self.init(self.site.token())
        assert r.returncode == 0, r.stderr
        self.site.agents[self.name] = self

    def run(self, *argv, **kw):
        """A command inside the running machine (its namespaces and root)."""
        return subprocess.Popen(["nsenter", "-t", str(self.proc.pid), "-n", "-m", "-p", "-r",
                                 "-w", *argv], **kw)

    def start(self):
        self.proc = MachineProc(
            ["ip", "netns", "exec", self.netns, "unshare", "--mount", "--pid", "--fork",
             "--propagation", "private", "sh", "-c", _BOOT, "boot", self.mdir, self.dir,
             prog("siteward-agent"), "--dir", self.dir],
            os.path.join(self.site.tmp, f"agent-{self.name}.log"), self.env)
        sock = os.path.join(self.dir, "agent.sock")
        wait_for(lambda: self._heard_of() and os.path.exists(sock), 30,
                 f"machine {self.name}'s agent to report")
        return self.proc

    def file(self, path):
        """A file of the machine's root as the machine sees it, read from outside: its
        own copy if it wrote one, else this machine's."""
        own = os.path.join(self.mdir, "upper", path.lstrip("/"))
        return own if os.path.lexists(own) else path
