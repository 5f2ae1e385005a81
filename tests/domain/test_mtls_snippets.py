"""The mutual TLS code a service page hands out runs as shown, in Python, Node.js and Go.

Every snippet runs exactly as ``networking.mtls_snippets`` returns it: Python under Debian's
``python3`` with no site packages, Node.js with ``node -e``, Go built from its text. The files
it reads are laid out as the kubelet lays them out (``cert.pem -> ..data/cert.pem``, ``..data``
a symlink swapped atomically to a new directory), and are swapped under running programs.

``billing.internal`` resolves to this machine only for the clients: each runs in its own mount
namespace, where a private ``/etc/hosts`` is bound over the real one (``unshare --mount``;
the tests run as root).
"""

from __future__ import annotations

import datetime as dt
import os
import queue
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from networking import identity, mtls_snippets
from tests.waiting import wait_until

PROJECT = "p1abcdefghij"
OTHER_PROJECT = "p2qrstuvwxyz"
SERVICE = "billing"
CALLER_ID = identity.spiffe_id(PROJECT, "caller")
WHOLE_PROJECT = identity.spiffe_id(PROJECT, "*")
OK = f"200 Hello, {CALLER_ID}"
# Waits are for what a user waits for; these bound them on a busy machine.
ANSWER_TIMEOUT = 30
RELOAD_TIMEOUT = 20


@dataclass(frozen=True)
class Language:
    name: str
    server: str  # the tab labels
    client: str


LANGUAGES = [
    Language("python", "Python server (ssl)", "Python client (urllib, httpx, requests)"),
    Language("node", "Node.js server (https)", "Node.js client (https)"),
    Language("go", "Go server (crypto/tls)", "Go client (crypto/tls)"),
]
each_language = pytest.mark.parametrize("language", LANGUAGES, ids=lambda language: language.name)


# The certificates -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """The project's CA, the one a rotation brings in, and another project's."""

    ca: identity.Issued
    next_ca: identity.Issued
    other_ca: identity.Issued

    def leaf(self, ca: identity.Issued, name: str, project: str = PROJECT) -> identity.Issued:
        return identity.issue(
            ca,
            project_uid=project,
            service_name=name,
            hostnames=[f"{name}.internal"],
            now=dt.datetime.now(dt.UTC),
        )


@pytest.fixture(scope="module")
def pki() -> Pki:
    now = dt.datetime.now(dt.UTC)
    return Pki(
        ca=identity.new_ca(PROJECT, now=now),
        next_ca=identity.new_ca(PROJECT, now=now, generation=2),
        other_ca=identity.new_ca(OTHER_PROJECT, now=now),
    )


class TlsDir:
    """A workload's ``/var/run/stackblaze/tls`` as the kubelet keeps it: each file a symlink into
    ``..data``, itself a symlink that an update swaps atomically to a new directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir()

    def write(self, leaf: identity.Issued, cas: list[identity.Issued], accept: str = "") -> None:
        files = {
            "cert.pem": leaf.certificate_pem,
            "key.pem": leaf.key_pem,
            "ca.pem": identity.trust_bundle(ca.certificate_pem for ca in cas),
            "accept.txt": accept,
        }
        new = Path(tempfile.mkdtemp(prefix="..data_", dir=self.path))
        for name, text in files.items():
            (new / name).write_text(text)
        data = self.path / "..data"
        old = data.resolve() if data.is_symlink() else None
        (self.path / "..data_tmp").symlink_to(new.name)
        os.rename(self.path / "..data_tmp", data)  # readers see all old files, or all new ones
        for name in files:
            if not (self.path / name).is_symlink():
                (self.path / name).symlink_to(f"..data/{name}")
        if old is not None:
            shutil.rmtree(old)


def accepting(*ids: str) -> str:
    return "# who may call billing\n\n" + "".join(f"{spiffe}\n" for spiffe in ids)


# The programs ---------------------------------------------------------------------------------


def tool(name: str, *candidates: str) -> str:
    found = shutil.which(name) or next((c for c in candidates if Path(c).exists()), None)
    if found is None:
        pytest.fail(f"{name} is not installed: the {name} snippets cannot be run (install it)")
    return found


@pytest.fixture(scope="module")
def port() -> int:
    """One free port for the module: the snippets, Go's built ones included, have it inside."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The /etc/hosts the clients see, and a check that this machine can show it to them."""
    path = tmp_path_factory.mktemp("etc") / "hosts"
    path.write_text("127.0.0.1 localhost\n127.0.0.1 billing.internal ledger.internal\n")
    seen = subprocess.run(
        in_namespace(["getent", "hosts", "billing.internal"], path),
        capture_output=True,
        text=True,
        check=False,
    )
    if not seen.stdout.startswith("127.0.0.1"):
        pytest.fail(
            "a client's private /etc/hosts did not take (unshare --mount needs root or "
            f"CAP_SYS_ADMIN): {seen.stdout}{seen.stderr}"
        )
    return path


def in_namespace(argv: list[str], hosts: Path) -> list[str]:
    script = 'mount --bind "$0" /etc/hosts && exec "$@"'
    return ["unshare", "--mount", "sh", "-c", script, str(hosts), *argv]


Programs = dict[tuple[str, str], list[str]]  # (language, what) -> the command that runs it


@pytest.fixture(scope="module")
def programs(port: int, tmp_path_factory: pytest.TempPathFactory) -> Programs:
    """Each snippet as a command: the server and client for billing, and a client for ledger
    (a name billing's certificate does not carry)."""
    node, go = tool("node", "/usr/bin/node"), tool("go", "/usr/local/go/bin/go")
    # Debian's interpreter with no site packages: what a bare container has.
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    commands: Programs = {}
    go_sources = tmp_path_factory.mktemp("go")
    (go_sources / "go.mod").write_text("module snippets\n\ngo 1.22\n")
    for service, what in ((SERVICE, "server"), (SERVICE, "client"), ("ledger", "client")):
        texts = mtls_snippets.snippets(service, port, "caller", 8080)
        for language in LANGUAGES:
            text = texts[getattr(language, what)]
            key = (language.name, what if service == SERVICE else f"{what} for {service}")
            if language.name == "python":
                commands[key] = [python, "-I", "-S", "-c", text]
            elif language.name == "node":
                commands[key] = [node, "-e", text]
            else:
                package = go_sources / f"{what}_{service}"
                package.mkdir()
                (package / "main.go").write_text(text)
                commands[key] = [str(go_sources / "bin" / package.name)]
    go_environment = {**os.environ, "GOTOOLCHAIN": "local", "GOPROXY": "off", "GOWORK": "off"}
    if "HOME" not in go_environment and "GOCACHE" not in go_environment:
        go_environment["GOCACHE"] = str(Path(tempfile.gettempdir()) / "stackblaze-go-cache")
    built = subprocess.run(
        [go, "build", "-o", "bin/", "./..."],
        cwd=go_sources,
        env=go_environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, f"the Go snippets do not build:\n{built.stderr}"
    return commands


def environment(tls_dir: TlsDir) -> dict[str, str]:
    """This process's environment without proxies (urllib would send billing.internal to one)."""
    kept = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    return {**kept, "STACKBLAZE_TLS_DIR": str(tls_dir.path)}


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


class Client:
    """A caller that keeps running: each path written to it is one call, answered by one line
    (``200 Hello, …``, ``403 …`` or ``error …``)."""

    def __init__(self, argv: list[str], tls_dir: TlsDir, log: Path) -> None:
        self.log = log
        with log.open("wb") as errors:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                env=environment(tls_dir),
                text=True,
            )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout as lines:
            for line in lines:
                self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def call(self, path: str = "/") -> str:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{path}\n")
        self.process.stdin.flush()
        try:
            line = self.lines.get(timeout=ANSWER_TIMEOUT)
        except queue.Empty:
            line = None
        if line is None:
            raise AssertionError(f"the client did not answer: {self.log.read_text()}")
        return line

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class Run:
    """Starts what a test needs and stops it all after."""

    programs: Programs
    port: int
    hosts: Path
    tmp_path: Path
    servers: list[Server]
    clients: list[Client]

    def tls_dir(self, name: str) -> TlsDir:
        return TlsDir(self.tmp_path / name)

    def server(self, language: Language, tls_dir: TlsDir) -> Server:
        log = self.tmp_path / f"{language.name}-server.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                self.programs[language.name, "server"],
                stdout=output,
                stderr=subprocess.STDOUT,
                env=environment(tls_dir),
            )
        server = Server(process, log)
        self.servers.append(server)

        def listening() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"the {language.name} server exited: {server.output()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            except OSError:
                return False
            return True

        wait_until(listening, f"the {language.name} server to listen", timeout=ANSWER_TIMEOUT)
        return server

    def client(self, language: Language, tls_dir: TlsDir, what: str = "client") -> Client:
        argv = in_namespace(self.programs[language.name, what], self.hosts)
        log = self.tmp_path / f"{language.name}-{tls_dir.path.name}-{len(self.clients)}.log"
        client = Client(argv, tls_dir, log)
        self.clients.append(client)
        return client

    def call_once(self, language: Language, tls_dir: TlsDir, what: str = "client") -> str:
        client = self.client(language, tls_dir, what)
        answer = client.call()
        client.close()
        return answer

    def stop(self) -> None:
        for client in self.clients:
            if client.process.poll() is None:
                client.close()
        for server in self.servers:
            if server.process.poll() is None:
                server.process.kill()
            server.process.wait()


@pytest.fixture
def run(programs: Programs, port: int, hosts: Path, tmp_path: Path) -> Iterator[Run]:
    started = Run(programs, port, hosts, tmp_path, [], [])
    yield started
    started.stop()


def probe(port: int, caller: TlsDir | None, trust: list[identity.Issued]) -> tuple[str, bytes]:
    """A call from this test (not a snippet): the answer's status (``200 OK``), or
    ``refused at the handshake: …``; and the certificate the server showed."""
    context = ssl.create_default_context(
        cadata=identity.trust_bundle(ca.certificate_pem for ca in trust)
    )
    # In TLS 1.2 a server that refuses our certificate fails the handshake itself; in TLS 1.3
    # the refusal would only surface at a later read or write, and look like any other failure.
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    if caller is not None:
        context.load_cert_chain(caller.path / "cert.pem", caller.path / "key.pem")
    with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_TIMEOUT) as raw:
        try:
            connection = context.wrap_socket(raw, server_hostname=f"{SERVICE}.internal")
        except ssl.SSLError as error:
            return f"refused at the handshake: {error}", b""
        with connection:
            shown = connection.getpeercert(binary_form=True) or b""
            connection.sendall(f"GET / HTTP/1.0\r\nHost: {SERVICE}.internal\r\n\r\n".encode())
            response = b""
            while chunk := connection.recv(65536):
                response += chunk
    status_line = response.decode().split("\r\n")[0]  # HTTP/1.0 200 OK
    return status_line.partition(" ")[2] or "closed without an answer", shown


def der(issued: identity.Issued) -> bytes:
    return ssl.PEM_cert_to_DER_cert(issued.certificate_pem)


# The tests ------------------------------------------------------------------------------------


def test_every_tab_reads_the_platforms_files_and_names_the_service(port: int) -> None:
    texts = mtls_snippets.snippets(SERVICE, port, "caller", 8080)
    assert list(texts) == [label for lang in LANGUAGES for label in (lang.server, lang.client)]
    for label, text in texts.items():
        assert "/var/run/stackblaze/tls" in text and "STACKBLAZE_TLS_DIR" in text, label
        assert "@" not in text, label  # every placeholder filled
    for language in LANGUAGES:
        assert f"{SERVICE}.internal:{port}" in texts[language.client]
        assert str(port) in texts[language.server]


def test_it_refuses_what_is_not_a_service_name() -> None:
    with pytest.raises(ValueError, match="not a service name"):
        mtls_snippets.snippets('billing"; rm -rf /', 8443, "caller", 8080)
    with pytest.raises(ValueError, match="not a port number"):
        mtls_snippets.snippets(SERVICE, 0, "caller", 8080)


def test_the_go_snippets_are_gofmt_formatted(port: int) -> None:
    gofmt = tool("gofmt", "/usr/local/go/bin/gofmt")
    for label, text in mtls_snippets.snippets(SERVICE, port, "caller", 8080).items():
        if label.startswith("Go "):
            formatted = subprocess.run([gofmt], input=text, capture_output=True, text=True)
            assert formatted.stdout == text, label


@each_language
def test_an_accepted_caller_gets_200_naming_its_identity(
    language: Language, run: Run, pki: Pki
) -> None:
    server_files, caller = run.tls_dir("billing"), run.tls_dir("caller")
    server_files.write(pki.leaf(pki.ca, SERVICE), [pki.ca], accepting(CALLER_ID))
    caller.write(pki.leaf(pki.ca, "caller"), [pki.ca])
    run.server(language, server_files)

    assert run.call_once(language, caller) == OK


@each_language
def test_a_caller_the_accept_list_does_not_name_gets_403(
    language: Language, run: Run, pki: Pki
) -> None:
    server_files, intruder = run.tls_dir("billing"), run.tls_dir("intruder")
    server_files.write(pki.leaf(pki.ca, SERVICE), [pki.ca], accepting(CALLER_ID))
    intruder.write(pki.leaf(pki.ca, "intruder"), [pki.ca])  # signed by the same CA
    run.server(language, server_files)

    intruder_id = identity.spiffe_id(PROJECT, "intruder")
    assert run.call_once(language, intruder) == f"403 {intruder_id} may not call billing"


@each_language
def test_a_renamed_caller_is_let_in_by_a_list_that_still_names_it_the_old_way(
    language: Language, run: Run, pki: Pki
) -> None:
    """A rename reaches the caller's certificate and the server's accept.txt in the same
    pass, but each pod's files are refreshed in their own time: while its old name lives, the
    renamed caller's certificate names both identities, the new one first."""
    server_files, renamed = run.tls_dir("billing"), run.tls_dir("renamed")
    server_files.write(pki.leaf(pki.ca, SERVICE), [pki.ca], accepting(CALLER_ID))
    leaf = identity.issue(
        pki.ca,
        project_uid=PROJECT,
        service_name="checkout",
        hostnames=["checkout.internal", "caller.internal"],
        now=dt.datetime.now(dt.UTC),
        old_names=["caller"],
    )
    renamed.write(leaf, [pki.ca])
    run.server(language, server_files)

    assert (
        run.call_once(language, renamed) == f"200 Hello, {identity.spiffe_id(PROJECT, 'checkout')}"
    )
    # Once the old name is gone, so is its identity: the old list lets it in no more.
    renamed.write(pki.leaf(pki.ca, "checkout"), [pki.ca])
    assert run.call_once(language, renamed).startswith("403 ")


@each_language
def test_another_projects_caller_is_refused_at_the_handshake(
    language: Language, run: Run, pki: Pki
) -> None:
    server_files, outsider = run.tls_dir("billing"), run.tls_dir("outsider")
    server_files.write(pki.leaf(pki.ca, SERVICE), [pki.ca], accepting(WHOLE_PROJECT))
    # It trusts billing's CA: only billing can refuse it, and does, whatever its name.
    outsider.write(pki.leaf(pki.other_ca, "caller", OTHER_PROJECT), [pki.other_ca, pki.ca])
    server = run.server(language, server_files)

    assert run.call_once(language, outsider).startswith("error ")
    as_outsider = probe(run.port, outsider, [pki.ca])[0]
    assert as_outsider.startswith("refused at the handshake: "), as_outsider
    no_certificate = probe(run.port, None, [pki.ca])[0]
    assert no_certificate.startswith("refused at the handshake: "), no_certificate
    assert server.process.poll() is None


@each_language
def test_a_client_trusts_its_bundle_only_and_checks_the_name_it_dialed(
    language: Language, run: Run, pki: Pki
) -> None:
    server_files, caller = run.tls_dir("billing"), run.tls_dir("caller")
    misled = run.tls_dir("misled")
    server_files.write(pki.leaf(pki.ca, SERVICE), [pki.ca], accepting(CALLER_ID))
    caller.write(pki.leaf(pki.ca, "caller"), [pki.ca])
    misled.write(pki.leaf(pki.ca, "caller"), [pki.other_ca])
    run.server(language, server_files)

    # ledger.internal leads to billing here; billing's certificate does not name it.
    assert run.call_once(language, caller, "client for ledger").startswith("error ")
    assert run.call_once(language, misled).startswith("error ")  # a CA it was not given
    assert run.call_once(language, caller) == OK


@each_language
def test_a_ca_rotation_never_refuses_a_call_and_restarts_nothing(
    language: Language, run: Run, pki: Pki
) -> None:
    old, new = pki.ca, pki.next_ca
    old_billing, old_caller = pki.leaf(old, SERVICE), pki.leaf(old, "caller")
    new_billing, new_caller = pki.leaf(new, SERVICE), pki.leaf(new, "caller")
    server_files, caller = run.tls_dir("billing"), run.tls_dir("caller")
    server_files.write(old_billing, [old], accepting(CALLER_ID))
    caller.write(old_caller, [old])
    server = run.server(language, server_files)
    client = run.client(language, caller)
    answers = [client.call()]
    # Calls from this test (as the same caller) show when the server has taken each step.
    as_old, as_new = run.tls_dir("probe-old"), run.tls_dir("probe-new")
    as_old.write(old_caller, [old])
    as_new.write(new_caller, [new])

    def trusts_new_ca() -> bool:
        return probe(run.port, as_new, [old, new])[0].startswith("200 ")

    def shows_new_certificate() -> bool:
        return probe(run.port, as_old, [old, new])[1] == der(new_billing)

    def refuses_old_ca() -> bool:
        return probe(run.port, as_old, [old, new])[0].startswith("refused at the handshake: ")

    def step(
        what: str,
        billing: identity.Issued,
        caller_leaf: identity.Issued,
        bundle: list[identity.Issued],
        server_took_it: Callable[[], bool],
    ) -> None:
        caller.write(caller_leaf, bundle)
        answers.append(client.call())
        server_files.write(billing, bundle, accepting(CALLER_ID))

        def taken() -> bool:
            answers.append(client.call())
            return server_took_it()

        wait_until(taken, f"the server to take {what}", RELOAD_TIMEOUT, every=0.05)
        answers.append(client.call())

    step("both CAs", old_billing, old_caller, [old, new], trusts_new_ca)
    step("leaves from the new CA", new_billing, new_caller, [old, new], shows_new_certificate)
    step("the new CA alone", new_billing, new_caller, [new], refuses_old_ca)

    assert set(answers) == {OK}, answers
    assert server.process.poll() is None  # the same process all along


@each_language
def test_a_changed_accept_list_counts_without_a_restart(
    language: Language, run: Run, pki: Pki
) -> None:
    server_files, caller = run.tls_dir("billing"), run.tls_dir("caller")
    billing = pki.leaf(pki.ca, SERVICE)
    server_files.write(billing, [pki.ca], accepting(CALLER_ID))
    caller.write(pki.leaf(pki.ca, "caller"), [pki.ca])
    server = run.server(language, server_files)
    client = run.client(language, caller)
    assert client.call() == OK

    server_files.write(billing, [pki.ca], accepting())  # comments and blank lines only
    refused = f"403 {CALLER_ID} may not call billing"
    wait_until(lambda: client.call() == refused, "the caller to be refused", RELOAD_TIMEOUT, 0.05)

    server_files.write(billing, [pki.ca], accepting(WHOLE_PROJECT))
    wait_until(lambda: client.call() == OK, "the whole project to be let in", RELOAD_TIMEOUT, 0.05)
    assert server.process.poll() is None


@each_language
def test_the_server_stops_cleanly_on_sigterm(language: Language, run: Run, pki: Pki) -> None:
    server_files, caller = run.tls_dir("billing"), run.tls_dir("caller")
    server_files.write(pki.leaf(pki.ca, SERVICE), [pki.ca], accepting(CALLER_ID))
    caller.write(pki.leaf(pki.ca, "caller"), [pki.ca])
    server = run.server(language, server_files)
    assert run.call_once(language, caller) == OK

    server.process.send_signal(signal.SIGTERM)

    assert server.process.wait(timeout=ANSWER_TIMEOUT) == 0, server.output()
