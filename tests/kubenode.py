"""A real Kubernetes node on this machine, joined to a ``TestAPIServer``: the data plane.

containerd + runc (Debian's), Debian's CNI bridge plugin, the kubelet and kube-proxy (iptables
mode) of the same Kubernetes release as the API server, kube-router as the NetworkPolicy
enforcer (iptables + ipset), and CoreDNS with the product's own ``deploy/`` snippet in its
Corefile, answering pods at the ``kube-dns`` Service's ClusterIP as in any cluster. Images are
the ones ``scripts/test-cluster/images.py`` built from files on this machine, imported into
containerd at start: no registry is involved.

The node is the machine itself (its network namespace, its iptables), so one node runs per
machine at a time: ``start()`` takes a machine-wide lock and clears what a killed run left
behind (pods' processes, mounts, iptables chains, the bridge) before it begins, and ``stop()``
clears it again. Needs root.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import IO, Any

from tests.kubeapi import SERVICE_CLUSTER_IP_RANGE, KubeProcessError, TestAPIServer, _Proc

NODE_NAME = "stackblaze-node"
BRIDGE = "sbk0"
POD_CIDR = "10.244.0.0/24"
CLUSTER_CIDR = "10.244.0.0/16"
# The node's address: the bridge's own, the pods' gateway.
NODE_IP = "10.244.0.1"
CLUSTER_DNS = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
CNI_BIN_DIR = Path("/usr/lib/cni")
ROOT = Path("/var/lib/stackblaze-node")
RUN = Path("/run/stackblaze-node")
LOCK = Path("/run/stackblaze-node.lock")
REPO_ROOT = Path(__file__).resolve().parent.parent
COREDNS_SNIPPET = REPO_ROOT / "deploy" / "coredns-internal-zone.conf"
IMAGE_REPOSITORY = "stackblaze.test"
# The images every test may use, by short name.
IMAGES = ("pause", "workload", "probe", "python", "redis", "postgres")


def image(name: str) -> str:
    """The reference of one of the locally built images (``IMAGES``)."""
    tags = {"pause": "3.10", "workload": "1", "probe": "1", "python": "3", "redis": "7"}
    if name == "postgres":
        return f"{IMAGE_REPOSITORY}/postgres:{_postgres_version()}"
    return f"{IMAGE_REPOSITORY}/{name}:{tags[name]}"


def _postgres_version() -> str:
    versions = sorted(
        (p.name for p in Path("/usr/lib/postgresql").glob("*") if (p / "bin/postgres").exists()),
        key=int,
    )
    return versions[-1] if versions else "15"


def corefile(kubeconfig: Path, snippet: str) -> str:
    """kubeadm's default Corefile for this release, with the product's snippet where the
    snippet says it goes (inside the main block, before ``kubernetes``), bound to the node."""
    indented = "".join(f"    {line}\n" if line else "\n" for line in snippet.splitlines())
    return (
        ".:53 {\n"
        f"    bind {NODE_IP}\n"
        "    errors\n"
        "    ready 127.0.0.1:0\n"
        f"{indented}"
        f"    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{\n"
        f"       kubeconfig {kubeconfig}\n"
        "       pods insecure\n"
        "       fallthrough in-addr.arpa ip6.arpa\n"
        "       ttl 30\n"
        "    }\n"
        "    forward . /etc/resolv.conf {\n"
        "       max_concurrent 1000\n"
        "    }\n"
        "    cache 30 {\n"
        f"       disable success {CLUSTER_DOMAIN}\n"
        f"       disable denial {CLUSTER_DOMAIN}\n"
        "    }\n"
        "    loop\n"
        "    loadbalance\n"
        "}\n"
    )


class TestNode:
    """The node: start() after the API server, stop() before it."""

    __test__ = False

    def __init__(
        self,
        api: TestAPIServer,
        bin_dir: Path,
        images_dir: Path,
        *,
        coredns_snippet: str | None = None,
        network_policies: bool = True,
        start_timeout: float = 90.0,
    ) -> None:
        self.api = api
        self.bin_dir = bin_dir
        self.images_dir = images_dir
        self.coredns_snippet = (
            COREDNS_SNIPPET.read_text() if coredns_snippet is None else coredns_snippet
        )
        self.network_policies = network_policies
        self.start_timeout = start_timeout
        self.workdir = ROOT / "run"
        self._procs: dict[str, _Proc] = {}
        self._lock_file: IO[str] | None = None
        self.timings: dict[str, float] = {}

    # ---- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        t0 = time.monotonic()
        RUN.parent.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(LOCK, "w")  # noqa: SIM115 - held for the node's lifetime
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            self._lock_file = None
            raise KubeProcessError(
                f"another test node runs on this machine (it holds {LOCK}); one node at a time"
            ) from None
        try:
            clear_node(self.bin_dir)
            self.workdir.mkdir(parents=True)
            self._host_network()
            self._start_containerd()
            self.timings["containerd"] = time.monotonic() - t0
            self._import_images()
            self.timings["images"] = time.monotonic() - t0
            self._start_kubelet()
            self._wait_ready()
            self.timings["node_ready"] = time.monotonic() - t0
            # What needs the Node object: kube-router finds its node by name.
            self._start_kube_proxy()
            if self.network_policies:
                self._start_kube_router()
            self._start_coredns()
            self.timings["ready"] = time.monotonic() - t0
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for name in ("coredns", "kube-router", "kube-proxy", "kubelet"):
            proc = self._procs.pop(name, None)
            if proc is not None:
                proc.stop()
        # Pods' processes and mounts go before containerd, which knows nothing of them after.
        clear_node(self.bin_dir, containerd=self._procs.pop("containerd", None))
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    # ---- processes ----------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str]) -> _Proc:
        log_path = self.workdir / f"{name}.log"
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(
                [str(a) for a in args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
            )
        proc = _Proc(name, popen, log_path)
        self._procs[name] = proc
        return proc

    def _fail(self, name: str, what: str) -> KubeProcessError:
        proc = self._procs.get(name)
        tail = proc.log_tail(60) if proc else "(not started)"
        status = "running" if proc and proc.alive() else "exited"
        return KubeProcessError(f"{what}: {name} {status}; last lines of its log:\n{tail}")

    def logs(self) -> dict[str, str]:
        return {
            name: proc.log_path.read_text(errors="replace")
            for name, proc in self._procs.items()
            if proc.log_path.exists()
        }

    def _kubeconfig(self) -> Path:
        """The node's own copy: every node process names a path under ROOT, so a killed run's
        processes are found by it."""
        path = self.workdir / "node.kubeconfig"
        if not path.exists():
            shutil.copy(self.api.kubeconfig_path, path)
        return path

    # ---- the host's network -------------------------------------------------------------

    def _host_network(self) -> None:
        for key, value in (
            ("net/ipv4/ip_forward", "1"),
            ("net/bridge/bridge-nf-call-iptables", "1"),
            ("net/bridge/bridge-nf-call-ip6tables", "1"),
            ("net/ipv4/conf/all/route_localnet", "1"),
        ):
            Path("/proc/sys", key).write_text(value)
        # The bridge exists before the first pod, so the kubelet and CoreDNS can use its address.
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
        _run("ip", "addr", "add", f"{NODE_IP}/{POD_CIDR.split('/')[1]}", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")
        # ClusterIPs are routed to the bridge, not to this machine's own network: one kube-proxy
        # has not programmed yet finds nobody there (no route to host), and one with no ready
        # endpoint meets kube-proxy's REJECT (connection refused), as on a cluster's node.
        _run("ip", "route", "replace", SERVICE_CLUSTER_IP_RANGE, "dev", BRIDGE)
        cni = self.workdir / "cni"
        cni.mkdir()
        (cni / "10-stackblaze.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "1.0.0",
                    "name": "stackblaze-test",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": BRIDGE,
                            "isGateway": True,
                            "ipMasq": True,
                            "hairpinMode": True,
                            "ipam": {
                                "type": "host-local",
                                "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP}]],
                                "routes": [{"dst": "0.0.0.0/0"}],
                                "dataDir": str(ROOT / "ipam"),
                            },
                        },
                        {"type": "portmap", "capabilities": {"portMappings": True}},
                    ],
                },
                indent=2,
            )
        )

    # ---- containerd ---------------------------------------------------------------------

    @property
    def containerd_socket(self) -> Path:
        return RUN / "containerd.sock"

    def _start_containerd(self) -> None:
        RUN.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "containerd.toml"
        config.write_text(
            f"""version = 2
root = "{ROOT / "containerd"}"
state = "{RUN / "containerd"}"
disabled_plugins = ["io.containerd.internal.v1.tracing", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = "{self.containerd_socket}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{image("pause")}"
  enable_cdi = false
  # Root here may not lower an OOM score (no CAP_SYS_RESOURCE): pods get at least
  # containerd's own, instead of failing to start.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{RUN / "runc"}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{self.workdir / "cni"}"
"""
        )
        proc = self._spawn("containerd", ["containerd", "--config", str(config)])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not proc.alive():
                raise self._fail("containerd", "containerd did not start")
            if self.containerd_socket.exists() and self._ctr("version", check=False) == 0:
                return
            time.sleep(0.1)
        raise self._fail("containerd", "containerd did not answer within 30 s")

    def _ctr(self, *args: str, check: bool = True) -> int:
        result = subprocess.run(
            ["ctr", "--address", str(self.containerd_socket), "--namespace", "k8s.io", *args],
            capture_output=True,
            text=True,
            check=False,
        )
        if check and result.returncode != 0:
            raise KubeProcessError(f"ctr {' '.join(args)}: {result.stderr.strip()}")
        return result.returncode

    def _import_images(self) -> None:
        for name in IMAGES:
            tar = self.images_dir / f"{name}.tar"
            if not tar.exists():
                raise KubeProcessError(f"{tar} is missing: run scripts/test-cluster/build.sh")
            self._ctr("images", "import", "--no-unpack=false", str(tar))

    # ---- kubelet ------------------------------------------------------------------------

    def _start_kubelet(self) -> None:
        config = self.workdir / "kubelet.yaml"
        resolv = self.workdir / "resolv.conf"
        # Pods use CLUSTER_DNS; this is only for pods with dnsPolicy Default, which we do not run.
        resolv.write_text("nameserver 127.0.0.1\n")
        config.write_text(
            json.dumps(
                {
                    "apiVersion": "kubelet.config.k8s.io/v1beta1",
                    "kind": "KubeletConfiguration",
                    "address": NODE_IP,
                    "port": 10250,
                    "readOnlyPort": 0,
                    "healthzPort": 0,
                    "authentication": {
                        "anonymous": {"enabled": False},
                        "webhook": {"enabled": False},
                        "x509": {"clientCAFile": str(self.api.ca_path)},
                    },
                    "authorization": {"mode": "AlwaysAllow"},
                    "cgroupDriver": "cgroupfs",
                    # This machine mounts cgroup v1 controllers beside a v2 hierarchy.
                    "failCgroupV1": False,
                    "failSwapOn": False,
                    "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
                    "clusterDNS": [CLUSTER_DNS],
                    "clusterDomain": CLUSTER_DOMAIN,
                    "resolvConf": str(resolv),
                    "serializeImagePulls": False,
                    # Images here cannot be pulled again: never collect them, never evict.
                    "imageGCHighThresholdPercent": 100,
                    "imageGCLowThresholdPercent": 99,
                    "evictionHard": {
                        "memory.available": "1Mi",
                        "nodefs.available": "1%",
                        "imagefs.available": "1%",
                        "nodefs.inodesFree": "1%",
                    },
                    "nodeStatusUpdateFrequency": "2s",
                    # How often each pod is synced: what refreshes a mounted Secret's files
                    # (mutual TLS's; production's default is a minute).
                    "syncFrequency": "5s",
                    "maxPods": 200,
                    "podPidsLimit": -1,
                    "logging": {"format": "text"},
                }
            )
        )
        self._spawn(
            "kubelet",
            [
                str(self.bin_dir / "kubelet"),
                f"--config={config}",
                f"--kubeconfig={self._kubeconfig()}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={NODE_IP}",
                f"--root-dir={ROOT / 'kubelet'}",
                f"--cert-dir={ROOT / 'kubelet-pki'}",
                "--v=1",
            ],
        )

    def _start_kube_proxy(self) -> None:
        config = self.workdir / "kube-proxy.yaml"
        config.write_text(
            json.dumps(
                {
                    "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
                    "kind": "KubeProxyConfiguration",
                    "mode": "iptables",
                    "clientConnection": {"kubeconfig": str(self._kubeconfig())},
                    "hostnameOverride": NODE_NAME,
                    "clusterCIDR": CLUSTER_CIDR,
                    "healthzBindAddress": "",
                    "metricsBindAddress": "",
                    # Leave the machine's conntrack settings as they are.
                    "conntrack": {"maxPerCore": 0, "min": 0},
                    "iptables": {"minSyncPeriod": "0s", "syncPeriod": "30s"},
                }
            )
        )
        self._spawn("kube-proxy", [str(self.bin_dir / "kube-proxy"), f"--config={config}", "--v=1"])

    def _start_kube_router(self) -> None:
        self._spawn(
            "kube-router",
            [
                str(self.bin_dir / "kube-router"),
                f"--kubeconfig={self._kubeconfig()}",
                f"--hostname-override={NODE_NAME}",
                "--run-firewall=true",
                "--run-router=false",
                "--run-service-proxy=false",
                "--enable-cni=false",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--health-port=0",
                "--metrics-port=0",
                "--v=1",
            ],
        )

    def _start_coredns(self) -> None:
        self.restart_coredns(self.coredns_snippet)
        # The kube-dns Service every pod's resolv.conf names, its endpoint this node's CoreDNS.
        self.api.request(
            "POST",
            "/api/v1/namespaces/kube-system/services",
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "kube-dns", "labels": {"k8s-app": "kube-dns"}},
                "spec": {
                    "clusterIP": CLUSTER_DNS,
                    "ports": [
                        {"name": "dns", "port": 53, "protocol": "UDP"},
                        {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                    ],
                },
            },
        )
        self.api.request(
            "POST",
            "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices",
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": "kube-dns-node",
                    "labels": {
                        "kubernetes.io/service-name": "kube-dns",
                        "endpointslice.kubernetes.io/managed-by": "stackblaze-test-node",
                    },
                },
                "addressType": "IPv4",
                "endpoints": [{"addresses": [NODE_IP], "conditions": {"ready": True}}],
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                ],
            },
        )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            for name, proc in self._procs.items():
                if not proc.alive():
                    raise self._fail(name, "a node process exited")
            status, body = self.api.request("GET", f"/api/v1/nodes/{NODE_NAME}")
            if status == 200 and _ready(json.loads(body)):
                return
            time.sleep(0.2)
        raise self._fail("kubelet", f"node {NODE_NAME} not Ready within {self.start_timeout:.0f}s")

    def restart_coredns(self, snippet: str | None = None) -> None:
        """CoreDNS again, with ``snippet`` instead of the product's (``""``: none at all)."""
        proc = self._procs.pop("coredns", None)
        if proc is not None:
            proc.stop()
        self.coredns_snippet = COREDNS_SNIPPET.read_text() if snippet is None else snippet
        config = self.workdir / "Corefile"
        config.write_text(corefile(self._kubeconfig(), self.coredns_snippet))
        self._spawn("coredns", [str(self.bin_dir / "coredns"), "-conf", str(config)])
        self._wait_dns()

    def _wait_dns(self) -> None:
        """Until CoreDNS answers for the API server's own Service name."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for name, proc in self._procs.items():
                if not proc.alive():
                    raise self._fail(name, "a node process exited")
            if _dns_answers(NODE_IP, f"kubernetes.default.svc.{CLUSTER_DOMAIN}"):
                return
            time.sleep(0.2)
        raise self._fail("coredns", "CoreDNS did not answer within 30 s")


def _dns_answers(server: str, name: str) -> bool:
    """Whether ``server`` answers an A query for ``name`` with at least one address."""
    import random
    import socket
    import struct

    query_id = random.randrange(1 << 16)
    question = b"".join(bytes([len(part)]) + part.encode() for part in name.split(".")) + b"\0"
    packet = struct.pack(">HHHHHH", query_id, 0x0100, 1, 0, 0, 0) + question + b"\0\1\0\1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1)
        try:
            sock.sendto(packet, (server, 53))
            answer = sock.recv(4096)
        except OSError:
            return False
    answer_id, flags, _, answers = struct.unpack(">HHHH", answer[:8])
    return bool(answer_id == query_id and flags & 0xF == 0 and answers > 0)


def _ready(node: dict[str, Any]) -> bool:
    for condition in node.get("status", {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return False


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise KubeProcessError(f"{' '.join(args)}: {result.stderr.strip()}")
    return result


# ---- clearing a node, whether it stopped cleanly or was killed -----------------------------


def _pids_in_cgroups() -> set[int]:
    """Every process in the pods' cgroups (under ``kubepods`` in each v1 controller)."""
    pids: set[int] = set()
    for procs in Path("/sys/fs/cgroup").glob("*/kubepods*/**/cgroup.procs"):
        with contextlib.suppress(OSError, ValueError):
            pids.update(int(line) for line in procs.read_text().split())
    return pids


def _shim_pids() -> set[int]:
    """containerd's shims serving our socket: they outlive containerd."""
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            command = (entry / "cmdline").read_bytes().split(b"\0")
            if (
                command
                and b"containerd-shim" in command[0]
                and str(RUN).encode() in b" ".join(command)
            ):
                found.add(int(entry.name))
    return found


def _kill(pids: set[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _mounts_under(*roots: Path) -> list[str]:
    found = []
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            target = line.split()[1].encode().decode("unicode_escape")
            if any(target == str(root) or target.startswith(f"{root}/") for root in roots):
                found.append(target)
    # Deepest first.
    return sorted(found, key=lambda path: path.count("/"), reverse=True)


def _remove_cgroups() -> None:
    for controller in Path("/sys/fs/cgroup").iterdir():
        folders = sorted(
            (p for p in controller.glob("kubepods*") if p.is_dir()),
            key=lambda p: len(p.parts),
        )
        for top in folders:
            for folder in sorted(
                (p for p in top.glob("**/") if p.is_dir()), key=lambda p: -len(p.parts)
            ):
                with contextlib.suppress(OSError):
                    folder.rmdir()


def clear_node(bin_dir: Path, containerd: _Proc | None = None) -> None:
    """Leave the machine as if no node had run: idempotent, safe after a kill -9."""
    for _ in range(5):
        pids = _pids_in_cgroups() | _shim_pids()
        if not pids:
            break
        _kill(pids)
        time.sleep(0.2)
    if containerd is not None:
        containerd.stop()
    # containerd and the node's other processes of a killed run, found by their paths.
    _kill(_processes_with(str(ROOT / "run")))
    for target in _mounts_under(ROOT, RUN, Path("/run/netns"), Path("/var/run/netns")):
        if "/netns/" in target and not target.rsplit("/", 1)[-1].startswith("cni-"):
            continue
        _run("umount", "-l", target, check=False)
    for netns in Path("/run/netns").glob("cni-*") if Path("/run/netns").exists() else ():
        with contextlib.suppress(OSError):
            netns.unlink()
    _remove_cgroups()
    kube_proxy = bin_dir / "kube-proxy"
    if kube_proxy.exists():
        _run(str(kube_proxy), "--cleanup", check=False)
    _clear_iptables()
    _run("ip", "route", "delete", SERVICE_CLUSTER_IP_RANGE, check=False)
    _run("ip", "link", "delete", BRIDGE, check=False)
    shutil.rmtree(RUN, ignore_errors=True)
    shutil.rmtree(ROOT, ignore_errors=True)


def _processes_with(text: str) -> set[int]:
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if text.encode() in (entry / "cmdline").read_bytes():
                found.add(int(entry.name))
    return found


def _clear_iptables() -> None:
    """Every KUBE- chain (the kubelet's, kube-proxy's, kube-router's) and CNI- chain (the bridge
    plugin's masquerade), and kube-router's ipsets: nothing else on a test machine has them."""
    for table in ("filter", "nat", "mangle"):
        rules = _run("iptables-save", "-t", table, check=False).stdout.splitlines()
        chains = [
            line[1:].split()[0]
            for line in rules
            if line.startswith(":") and line[1:].startswith(("KUBE-", "CNI-"))
        ]
        for line in rules:
            if line.startswith("-A ") and any(f"-j {chain}" in line for chain in chains):
                _run("iptables", "-t", table, "-D", *shlex.split(line)[1:], check=False)
        for chain in chains:
            _run("iptables", "-t", table, "-F", chain, check=False)
        for chain in chains:
            _run("iptables", "-t", table, "-X", chain, check=False)
    for name in _run("ipset", "list", "-n", check=False).stdout.split():
        if name.startswith(("KUBE-", "kube-router")):
            _run("ipset", "destroy", name, check=False)
