"""A real Kubernetes control plane for tests: etcd, kube-apiserver, kube-controller-manager
and, for the data-plane tier, kube-scheduler (the node is in ``tests/kubenode.py``).

The binaries are built once per machine by ``scripts/test-cluster/build.sh`` from the Go module
proxy's sources (Kubernetes ``KUBE_VERSION``, etcd as that release pairs it) and cached outside
the checkout. ``make test`` and ``.ci/run`` run the build before pytest; here it only finds the
cache (and builds if it is missing, which takes a cold build's half hour).

Typical use as a pytest session fixture::

    @pytest.fixture(scope="session")
    def kube_api():
        yield from kube_api_session(controller_manager=True)

Without a node (``tests/cluster/``) pods stay Pending and NetworkPolicies are stored, not
enforced; ``tests/dataplane/`` adds the node. Without the controller manager nothing
garbage-collects, namespaces stay Terminating forever, Deployments never get ReplicaSets and no
default service accounts exist (so the ServiceAccount admission plugin is disabled unless the
server is created with ``controller_manager=True``).

No Django imports here; only the standard library, plus ``cryptography`` when
it is importable (otherwise the ``openssl`` command makes the certificates).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import functools
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BUILD_SCRIPT",
    "ClusterUnavailable",
    "KubeProcessError",
    "TestAPIServer",
    "images_dir",
    "kube_api_session",
    "require_binaries",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO_ROOT / "scripts/test-cluster/build.sh"
KUBE_VERSION = "1.37.2"
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
DEFAULT_CONTROLLERS = (
    "namespace",
    "deployment",
    "replicaset",
    "serviceaccount",
    "garbagecollector",
)
# What a node needs besides: Services' endpoints for kube-proxy, the root CA every pod's
# service-account volume mounts, StatefulSets' pods, finished pods collected.
NODE_CONTROLLERS = (
    *DEFAULT_CONTROLLERS,
    "endpointslice",
    "root-ca-cert-publisher",
    "statefulset",
    "podgc",
    # Lifts the not-ready taint a new node is created with, once the kubelet reports Ready.
    "nodelifecycle",
)
# A cold build of everything takes ~20 minutes on 2 cores; allow for a slow machine.
BUILD_TIMEOUT_S = 45 * 60


class ClusterUnavailable(RuntimeError):
    """The test API server cannot be had on this machine (build impossible)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KubeProcessError(RuntimeError):
    """etcd, kube-apiserver or kube-controller-manager failed to come up."""


# --------------------------------------------------------------------------
# Binaries
# --------------------------------------------------------------------------


BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "kube-router",
    "coredns",
)


@functools.cache
def _run_build_script() -> tuple[Path | None, str]:
    if not BUILD_SCRIPT.is_file():
        return None, f"{BUILD_SCRIPT} is missing"
    try:
        proc = subprocess.run(
            ["bash", str(BUILD_SCRIPT)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None, f"{BUILD_SCRIPT} did not finish within {BUILD_TIMEOUT_S}s"
    except OSError as exc:
        return None, f"cannot run {BUILD_SCRIPT}: {exc}"
    lines = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip()]
    if proc.returncode != 0 or not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-25:])
        return None, f"{BUILD_SCRIPT} failed (exit {proc.returncode}):\n{tail}"
    bin_dir = Path(lines[-1])
    for name in BINARIES:
        if not os.access(bin_dir / name, os.X_OK):
            return None, f"{BUILD_SCRIPT} printed {bin_dir}, but {name} is not there"
    return bin_dir, ""


def require_binaries() -> Path:
    """The bin dir of the test cluster (``make test`` built it; this finds it in the cache).

    Raises ClusterUnavailable(reason) when it cannot be had. The build script runs at most
    once per Python process; its warm path takes a fraction of a second.
    """
    bin_dir, reason = _run_build_script()
    if bin_dir is None:
        raise ClusterUnavailable(reason)
    return bin_dir


def images_dir(bin_dir: Path) -> Path:
    """Where the build put the container images, beside the binaries."""
    return bin_dir.parent / "images"


# --------------------------------------------------------------------------
# Process helpers
# --------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def _child_setup_factory() -> Callable[[], None] | None:
    """preexec_fn: die with the parent (PR_SET_PDEATHSIG), Linux only.

    Note the signal fires when the *thread* that spawned the child exits, so
    start servers from the main thread (pytest fixtures run there).
    """
    parent = os.getpid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None

    def setup() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # parent already gone
            os._exit(1)

    return setup


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                # start_new_session=True: the pid is also the process group id
                os.killpg(self.popen.pid, sig)
            except (ProcessLookupError, PermissionError):
                with contextlib.suppress(ProcessLookupError):
                    self.popen.send_signal(sig)
            try:
                self.popen.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue


# Strong references: a started server is never garbage-collected unstopped.
_LIVE: set[TestAPIServer] = set()
_WORKDIR_PREFIX = "stackblaze-kubeapi-"
_ETCD_PREFIX = "stackblaze-etcd-"
_OWNER_FILE = ".owner-pid"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep_stale_dirs(parents: Sequence[Path]) -> None:
    """Remove work dirs left behind by test sessions that were killed."""
    for parent in parents:
        try:
            entries = list(parent.iterdir())
        except OSError:
            continue
        for d in entries:
            if not d.name.startswith((_WORKDIR_PREFIX, _ETCD_PREFIX)):
                continue
            try:
                pid = int((d / _OWNER_FILE).read_text().strip())
            except (OSError, ValueError):
                continue
            if pid != os.getpid() and not _pid_alive(pid):
                shutil.rmtree(d, ignore_errors=True)


@atexit.register
def _stop_all() -> None:
    for server in list(_LIVE):
        with contextlib.suppress(Exception):  # best effort at interpreter exit
            server.stop()


# --------------------------------------------------------------------------
# Certificates
# --------------------------------------------------------------------------


def _make_pki(pki: Path) -> None:
    """A CA and what it signs, all EC P-256.

    Files: ca.crt ca.key; server.crt server.key (the API server: 127.0.0.1, localhost,
    kubernetes.default.svc...); kubelet-client.crt kubelet-client.key (the API server calling
    kubelets for exec and logs, in group system:masters); sa.key sa.pub (service-account
    tokens, RSA).
    """
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)

    def usage(*, certificates: bool) -> x509.KeyUsage:
        return x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=not certificates,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=certificates,
            crl_sign=certificates,
            encipher_only=False,
            decipher_only=False,
        )

    now = datetime.datetime.now(datetime.UTC)
    not_before = now - datetime.timedelta(hours=1)
    not_after = now + datetime.timedelta(days=30)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stackblaze-test-ca")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage(certificates=True), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (pki / "ca.crt").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    write_key(pki / "ca.key", ca_key)

    def issue(
        name: str,
        subject: list[x509.NameAttribute[str]],
        purpose: x509.ObjectIdentifier,
        names: list[x509.GeneralName] | None = None,
    ) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(subject))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage(certificates=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                critical=False,
            )
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        certificate = builder.sign(ca_key, hashes.SHA256())
        (pki / f"{name}.crt").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        write_key(pki / f"{name}.key", key)

    issue(
        "server",
        [x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")],
        ExtendedKeyUsageOID.SERVER_AUTH,
        [
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_network(SERVICE_CLUSTER_IP_RANGE)[1]),
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes"),
            x509.DNSName("kubernetes.default"),
            x509.DNSName("kubernetes.default.svc"),
        ],
    )
    issue(
        "kubelet-client",
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
            x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver-kubelet-client"),
        ],
        ExtendedKeyUsageOID.CLIENT_AUTH,
    )

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    write_key(pki / "sa.key", sa_key)
    (pki / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


# --------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------


class TestAPIServer:
    """etcd + kube-apiserver (+ optionally kube-controller-manager) on 127.0.0.1.

    Attributes once started: ``server`` (https://127.0.0.1:PORT), ``token``
    (bearer token of user "admin" in group system:masters), ``ca_path``,
    ``kubeconfig_path``, ``etcd_url``, ``workdir`` (logs: etcd.log,
    kube-apiserver.log, kube-controller-manager.log).
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        bin_dir: Path | None = None,
        *,
        controller_manager: bool = False,
        service_account_admission: bool | None = None,
        controllers: Sequence[str] = DEFAULT_CONTROLLERS,
        extra_apiserver_args: Sequence[str] = (),
        users: Sequence[str] = (),
        audit_users: Sequence[str] = (),
        start_timeout: float = 60.0,
        keep_workdir: bool = False,
    ) -> None:
        self.bin_dir = bin_dir if bin_dir is not None else require_binaries()
        self.apiserver_bin = self.bin_dir / "kube-apiserver"
        self.controller_manager_bin = self.bin_dir / "kube-controller-manager"
        self.etcd_bin = self.bin_dir / "etcd"
        self.with_controller_manager = controller_manager
        # Pods need the namespace's "default" ServiceAccount when the
        # ServiceAccount admission plugin is on; only the controller manager
        # creates it, so by default the plugin follows controller_manager.
        self.service_account_admission = (
            controller_manager if service_account_admission is None else service_account_admission
        )
        self.controllers = tuple(controllers)
        self.extra_apiserver_args = tuple(extra_apiserver_args)
        # Requests by these users are written to ``audit_log_path``, one JSON event a line.
        self.audit_users = tuple(audit_users)
        self.start_timeout = start_timeout
        self.keep_workdir = keep_workdir

        self.workdir: Path | None = None
        self._etcd_data: Path | None = None
        self._procs: dict[str, _Proc] = {}
        self._lock = threading.Lock()
        self.token = base64.urlsafe_b64encode(os.urandom(24)).decode().rstrip("=")
        # Users without any group: they can do only what RBAC bindings grant them.
        self.user_tokens = {
            user: base64.urlsafe_b64encode(os.urandom(24)).decode().rstrip("=") for user in users
        }
        self.port = 0
        self.server = ""
        self.etcd_url = ""
        self.timings: dict[str, float] = {}

    # ---- paths -----------------------------------------------------------
    def _path(self, name: str) -> Path:
        if self.workdir is None:
            raise RuntimeError("TestAPIServer is not started")
        return self.workdir / name

    @property
    def ca_path(self) -> Path:
        return self._path("pki/ca.crt")

    @property
    def kubeconfig_path(self) -> Path:
        return self._path("kubeconfig")

    @property
    def audit_log_path(self) -> Path:
        return self._path("audit.log")

    def env(self) -> dict[str, str]:
        """Environment variables pointing clients (kubectl, client libs) here."""
        return {"KUBECONFIG": str(self.kubeconfig_path)}

    # ---- lifecycle -------------------------------------------------------
    def __enter__(self) -> TestAPIServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if self.workdir is not None:
            raise RuntimeError("already started")
        t0 = time.monotonic()
        _sweep_stale_dirs([Path(tempfile.gettempdir()), Path("/dev/shm")])
        self.workdir = Path(tempfile.mkdtemp(prefix=_WORKDIR_PREFIX))
        (self.workdir / _OWNER_FILE).write_text(f"{os.getpid()}\n")
        _LIVE.add(self)
        try:
            pki = self.workdir / "pki"
            pki.mkdir()
            _make_pki(pki)
            (self.workdir / "tokens.csv").write_text(
                f'{self.token},admin,admin,"system:masters"\n'
                + "".join(f"{token},{user},{user}\n" for user, token in self.user_tokens.items())
            )
            self.timings["pki"] = time.monotonic() - t0
            self._start_etcd()
            self.timings["etcd"] = time.monotonic() - t0
            self._start_apiserver()
            self._write_kubeconfig(self.kubeconfig_path, self.token)
            self.timings["apiserver"] = time.monotonic() - t0
            if self.with_controller_manager:
                self.start_controller_manager()
                self.timings["controller_manager"] = time.monotonic() - t0
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        with self._lock:
            for name in ("kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
                proc = self._procs.pop(name, None)
                if proc is not None:
                    proc.stop()
            for p in self._procs.values():
                p.stop()
            self._procs.clear()
            if self._etcd_data is not None:
                shutil.rmtree(self._etcd_data, ignore_errors=True)
                self._etcd_data = None
            if self.workdir is not None and not self.keep_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
            _LIVE.discard(self)

    # ---- processes -------------------------------------------------------
    def _spawn(self, name: str, args: Sequence[str]) -> _Proc:
        log_path = self._path(f"{name}.log")
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(
                [str(a) for a in args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
                preexec_fn=_child_setup_factory(),
            )
        proc = _Proc(name, popen, log_path)
        self._procs[name] = proc
        return proc

    def _fail(self, proc: _Proc, what: str) -> KubeProcessError:
        code = proc.popen.returncode
        status = "still running" if proc.alive() else f"exited with code {code}"
        return KubeProcessError(
            f"{what}: {proc.name} {status}; last lines of its log:\n{proc.log_tail()}"
        )

    @staticmethod
    def _port_clash(proc: _Proc) -> bool:
        return not proc.alive() and "address already in use" in proc.log_tail(200)

    def _etcd_data_parent(self) -> Path:
        # No fsync, and in memory when there is room: etcd's disk is what slows an API server.
        shm = Path("/dev/shm")
        try:
            st = os.statvfs(shm)
            if st.f_bavail * st.f_frsize > 1 << 30 and os.access(shm, os.W_OK):
                return shm
        except OSError:
            pass
        return self._path("")

    def _start_etcd(self) -> None:
        for attempt in range(3):
            client, peer = free_port(), free_port()
            self._etcd_data = Path(
                tempfile.mkdtemp(prefix=_ETCD_PREFIX, dir=self._etcd_data_parent())
            )
            (self._etcd_data / _OWNER_FILE).write_text(f"{os.getpid()}\n")
            args = [
                str(self.etcd_bin),
                "--name=test",
                f"--data-dir={self._etcd_data / 'data'}",
                f"--listen-client-urls=http://127.0.0.1:{client}",
                f"--advertise-client-urls=http://127.0.0.1:{client}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=test=http://127.0.0.1:{peer}",
                "--initial-cluster-state=new",
                "--snapshot-count=100000",
                "--quota-backend-bytes=2147483648",
            ]
            # A test cluster's etcd need not survive a power cut.
            args.append("--unsafe-no-fsync")
            proc = self._spawn("etcd", args)
            self.etcd_url = f"http://127.0.0.1:{client}"
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if not proc.alive():
                    break
                try:
                    with urllib.request.urlopen(self.etcd_url + "/health", timeout=2) as r:
                        if json.loads(r.read()).get("health") in ("true", True):
                            return
                except (OSError, ValueError):
                    pass
                time.sleep(0.1)
            if self._port_clash(proc) and attempt < 2:
                self._procs.pop("etcd")
                shutil.rmtree(self._etcd_data, ignore_errors=True)
                continue
            raise self._fail(proc, "etcd not healthy (timeout 30s)")

    def _start_apiserver(self) -> None:
        pki = self._path("pki")
        disabled = [] if self.service_account_admission else ["ServiceAccount"]
        for attempt in range(3):
            self.port = free_port()
            self.server = f"https://127.0.0.1:{self.port}"
            args = [
                str(self.apiserver_bin),
                f"--etcd-servers={self.etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.port}",
                f"--cert-dir={pki}",
                f"--tls-cert-file={pki / 'server.crt'}",
                f"--tls-private-key-file={pki / 'server.key'}",
                f"--token-auth-file={self._path('tokens.csv')}",
                "--authorization-mode=RBAC",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--api-audiences={SERVICE_ACCOUNT_ISSUER}",
                # 127.0.0.1 is not a valid Endpoints address: don't publish
                # the apiserver in the "kubernetes" service's endpoints.
                "--endpoint-reconciler-type=none",
                # exec and logs: the API server calls the kubelet with this client certificate.
                f"--kubelet-client-certificate={pki / 'kubelet-client.crt'}",
                f"--kubelet-client-key={pki / 'kubelet-client.key'}",
                "--kubelet-preferred-address-types=InternalIP,Hostname",
                "--allow-privileged=true",
                "--profiling=false",
                "--v=1",
            ]
            if disabled:
                args.append(f"--disable-admission-plugins={','.join(disabled)}")
            if self.audit_users:
                policy = self._path("audit-policy.json")
                policy.write_text(
                    json.dumps(
                        {
                            "apiVersion": "audit.k8s.io/v1",
                            "kind": "Policy",
                            "omitStages": ["RequestReceived", "ResponseStarted", "Panic"],
                            "rules": [
                                {"level": "Metadata", "users": list(self.audit_users)},
                                {"level": "None"},
                            ],
                        }
                    )
                )
                args += [
                    f"--audit-policy-file={policy}",
                    f"--audit-log-path={self.audit_log_path}",
                    "--audit-log-format=json",
                    "--audit-log-mode=blocking",
                ]
            args.extend(self.extra_apiserver_args)
            proc = self._spawn("kube-apiserver", args)
            deadline = time.monotonic() + self.start_timeout
            ready = False
            while time.monotonic() < deadline:
                if not proc.alive():
                    break
                try:
                    status, body = self.request("GET", "/readyz", timeout=2)
                    if status == 200 and body.strip() == b"ok":
                        ready = True
                        break
                except OSError:
                    pass
                time.sleep(0.2)
            if ready:
                # The bootstrap controller creates the "default" namespace
                # (and the "kubernetes" service) just after /readyz.
                while time.monotonic() < deadline and proc.alive():
                    status, _ = self.request(
                        "GET", "/api/v1/namespaces/default/services/kubernetes"
                    )
                    if status == 200:
                        return
                    time.sleep(0.2)
                raise self._fail(proc, "default namespace/kubernetes service never appeared")
            if self._port_clash(proc) and attempt < 2:
                self._procs.pop("kube-apiserver")
                continue
            raise self._fail(proc, f"kube-apiserver not ready (timeout {self.start_timeout:.0f}s)")

    def start_controller_manager(self, *, wait: bool = True, timeout: float = 60.0) -> None:
        """Run kube-controller-manager (namespace deletion, Deployments, ...).

        With wait=True, returns once the service-account controller has
        created the "default" ServiceAccount in the "default" namespace.
        """
        if "kube-controller-manager" in self._procs:
            return
        t0 = time.monotonic()
        kubeconfig = self._path("controller-manager.kubeconfig")
        self._write_kubeconfig(kubeconfig, self.token)
        pki = self._path("pki")
        args = [
            str(self.controller_manager_bin),
            f"--kubeconfig={kubeconfig}",
            f"--controllers={','.join(self.controllers)}",
            "--leader-elect=false",
            "--secure-port=0",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            "--use-service-account-credentials=false",
            # default resync/sync periods are minutes; tests want seconds
            "--concurrent-namespace-syncs=5",
            "--namespace-sync-period=10s",
            "--profiling=false",
            "--v=1",
        ]
        proc = self._spawn("kube-controller-manager", args)
        if not wait:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not proc.alive():
                raise self._fail(proc, "kube-controller-manager exited")
            status, _ = self.request("GET", "/api/v1/namespaces/default/serviceaccounts/default")
            if status == 200:
                self.timings["controller_manager_ready"] = time.monotonic() - t0
                return
            time.sleep(0.2)
        raise self._fail(proc, f"kube-controller-manager not working after {timeout:.0f}s")

    def start_scheduler(self) -> None:
        """Run kube-scheduler, which puts pods on the data plane's node."""
        if "kube-scheduler" in self._procs:
            return
        kubeconfig = self._path("scheduler.kubeconfig")
        self._write_kubeconfig(kubeconfig, self.token)
        config = self._path("scheduler.yaml")
        config.write_text(
            json.dumps(
                {
                    "apiVersion": "kubescheduler.config.k8s.io/v1",
                    "kind": "KubeSchedulerConfiguration",
                    "clientConnection": {"kubeconfig": str(kubeconfig)},
                    "leaderElection": {"leaderElect": False},
                }
            )
        )
        self._spawn(
            "kube-scheduler",
            [
                str(self.bin_dir / "kube-scheduler"),
                f"--config={config}",
                "--secure-port=0",
                "--profiling=false",
                "--v=1",
            ],
        )

    def stop_controller_manager(self) -> None:
        proc = self._procs.pop("kube-controller-manager", None)
        if proc is not None:
            proc.stop()

    # ---- client helpers ---------------------------------------------------
    def cpu_seconds(self, name: str = "kube-apiserver") -> float:
        """The CPU time (user and system) one of the cluster's processes has used so far."""
        fields = Path(f"/proc/{self._procs[name].popen.pid}/stat").read_text()
        # After the command's name in parentheses: utime and stime are the 12th and 13th.
        utime, stime = fields.rsplit(")", 1)[1].split()[11:13]
        return (int(utime) + int(stime)) / os.sysconf("SC_CLK_TCK")

    def kubeconfig_for(self, user: str) -> Path:
        """A kubeconfig authenticating as one of the ``users`` given at construction."""
        path = self._path(f"kubeconfig-{user}")
        if not path.exists():
            self._write_kubeconfig(path, self.user_tokens[user])
        return path

    def _write_kubeconfig(self, path: Path, token: str) -> None:
        ca_data = base64.b64encode(self.ca_path.read_bytes()).decode()
        # JSON is YAML: every kubeconfig loader reads it.
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "test",
                    "cluster": {"server": self.server, "certificate-authority-data": ca_data},
                }
            ],
            "users": [{"name": "admin", "user": {"token": token}}],
            "contexts": [
                {"name": "test", "context": {"cluster": "test", "user": "admin"}},
            ],
            "current-context": "test",
            "preferences": {},
        }
        path.write_text(json.dumps(config, indent=2) + "\n")
        path.chmod(0o600)

    @functools.cached_property
    def _ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_path))

    def request(
        self,
        method: str,
        path: str,
        body: object | None = None,
        *,
        content_type: str = "application/json",
        timeout: float = 10.0,
        user: str | None = None,
    ) -> tuple[int, bytes]:
        """Minimal authenticated HTTPS request to the apiserver: (status, body); as the admin,
        or as one of the ``users`` given at construction."""
        data = None
        token = self.token if user is None else self.user_tokens[user]
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers["Content-Type"] = content_type
        req = urllib.request.Request(self.server + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, context=self._ssl_context, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def logs(self) -> dict[str, str]:
        """Current log text of each running process (for test failure output)."""
        return {
            name: p.log_path.read_text(errors="replace")
            for name, p in self._procs.items()
            if p.log_path.exists()
        }


def kube_api_session(**kwargs: object) -> Iterator[TestAPIServer]:
    """Body for a pytest session fixture: skip (or fail when CI=true) if unavailable.

    @pytest.fixture(scope="session")
    def kube_api():
        yield from kube_api_session(controller_manager=True)
    """
    import pytest

    try:
        bin_dir = require_binaries()
    except ClusterUnavailable as exc:
        msg = f"test Kubernetes API server unavailable: {exc.reason}"
        if os.environ.get("CI") == "true":
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    server = TestAPIServer(bin_dir, **kwargs)  # type: ignore[arg-type]
    server.start()
    try:
        yield server
    finally:
        server.stop()
