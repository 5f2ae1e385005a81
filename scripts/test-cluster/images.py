#!/usr/bin/env python3
"""Container images for the test cluster, built from files on this machine: no registry, no
Docker engine.

Each image is one layer holding the files it names, plus every shared library they load
(found with ``ldd``), written as an OCI image layout in a tar file that ``ctr images import``
reads. Only the standard library is used, so the build script can run this before any
virtualenv exists.

    images.py OUT_DIR BIN_DIR     build every image below into OUT_DIR/<name>.tar

The images (``stackblaze.test/<name>:<tag>``):

- ``pause``: the pod sandbox, compiled from the Kubernetes tree's ``pause.c``;
- ``workload``: the test workload (scripts/test-cluster/workload): HTTP echo, TCP listener and
  the questions tests ask from inside pods (resolve, connect, get);
- ``probe``: the product's connection probe (deploy/probe), what "Test connection" runs;
- ``python``: Debian's Python 3 and its standard library, for the verifier snippet we hand out;
- ``redis``: Debian's redis-server and redis-cli, a real Redis behind ``redis.internal``;
- ``postgres``: Debian's PostgreSQL server and psql, a real PostgreSQL behind
  ``postgres.internal``.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

REPOSITORY = "stackblaze.test"
# Not needed to run anything here, and large: test suites, IDLE, PostgreSQL's LLVM JIT.
SKIPPED_DIRECTORIES = ("test", "tests", "__pycache__", "idlelib", "bitcode", "ensurepip", "tkinter")
SKIPPED_FILES = ("llvmjit",)


@dataclass
class Image:
    name: str
    tag: str
    entrypoint: list[str]
    # (source on this machine, path in the image); a directory is copied whole.
    files: list[tuple[str, str]]
    env: list[str] = field(default_factory=list)
    # Directories to create empty (e.g. /tmp), with their modes.
    directories: dict[str, int] = field(default_factory=dict)
    # Extra text files: path in the image -> (content, mode).
    texts: dict[str, tuple[str, int]] = field(default_factory=dict)

    @property
    def reference(self) -> str:
        return f"{REPOSITORY}/{self.name}:{self.tag}"


POSTGRES_ENTRYPOINT = """#!/bin/sh
# A PostgreSQL server for one database: POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB.
# Runs as the image's postgres user (uid 999), which initdb and postgres require.
set -e
DATA=/tmp/pgdata
if [ ! -s "$DATA/PG_VERSION" ]; then
  printf '%s' "$POSTGRES_PASSWORD" > /tmp/pwfile
  initdb -D "$DATA" -U "$POSTGRES_USER" --pwfile=/tmp/pwfile -A scram-sha-256 \\
    --no-sync --encoding=UTF8 --locale=C >/dev/null
  rm -f /tmp/pwfile
  echo "host all all 0.0.0.0/0 scram-sha-256" >> "$DATA/pg_hba.conf"
  echo "CREATE DATABASE \\"$POSTGRES_DB\\" OWNER \\"$POSTGRES_USER\\";" \\
    | postgres --single -D "$DATA" postgres >/dev/null
fi
exec postgres -D "$DATA" -c listen_addresses='*' -c fsync=off -c unix_socket_directories=/tmp
"""
PASSWD = "root:x:0:0:root:/root:/bin/sh\npostgres:x:999:999:PostgreSQL:/tmp:/bin/sh\n"
GROUP = "root:x:0:\npostgres:x:999:\n"


def images(bin_dir: Path) -> list[Image]:
    pg = _postgres_dir()
    version = Path(pg).name
    # Where Debian puts them: postgres finds its share/ and lib/ from its own path.
    postgres_files = [
        (f"{pg}/bin/{tool}", f"{pg}/bin/{tool}") for tool in ("postgres", "initdb", "psql")
    ]
    postgres_files += [
        (f"{pg}/lib", f"{pg}/lib"),
        (f"/usr/share/postgresql/{version}", f"/usr/share/postgresql/{version}"),
        ("/usr/share/zoneinfo/UTC", "/usr/share/zoneinfo/UTC"),
        ("/bin/sh", "/bin/sh"),
        ("/usr/bin/rm", "/usr/bin/rm"),
    ]
    python = _debian_python()
    return [
        Image("pause", "3.10", ["/pause"], [(str(bin_dir / "pause"), "/pause")]),
        Image(
            "workload",
            "1",
            ["/usr/local/bin/workload"],
            [(str(bin_dir / "workload"), "/usr/local/bin/workload")],
        ),
        Image(
            "probe",
            "1",
            ["/usr/local/bin/stackblaze-probe"],
            [(str(bin_dir / "stackblaze-probe"), "/usr/local/bin/stackblaze-probe")],
        ),
        Image(
            "python",
            "3",
            ["/usr/bin/python3"],
            [
                (python, "/usr/bin/python3"),
                (f"/usr/lib/{Path(python).name}", f"/usr/lib/{Path(python).name}"),
                (str(bin_dir / "workload"), "/usr/local/bin/workload"),
            ],
            env=["PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"],
            directories={"/tmp": 0o1777},
        ),
        Image(
            "redis",
            "7",
            ["/usr/bin/redis-server"],
            [
                ("/usr/bin/redis-server", "/usr/bin/redis-server"),
                (_resolve("/usr/bin/redis-cli"), "/usr/bin/redis-cli"),
                (str(bin_dir / "workload"), "/usr/local/bin/workload"),
            ],
            directories={"/data": 0o777, "/tmp": 0o1777},
        ),
        Image(
            "postgres",
            version,
            ["/usr/local/bin/postgres-entrypoint"],
            [*postgres_files, (str(bin_dir / "workload"), "/usr/local/bin/workload")],
            env=[f"PATH={pg}/bin:/usr/local/bin:/usr/bin:/bin", "TZ=UTC"],
            directories={"/tmp": 0o1777},
            texts={
                "/usr/local/bin/postgres-entrypoint": (POSTGRES_ENTRYPOINT, 0o755),
                "/etc/passwd": (PASSWD, 0o644),
                "/etc/group": (GROUP, 0o644),
            },
        ),
    ]


def _postgres_dir() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=_version_key)
    if not found:
        raise SystemExit("images.py: no PostgreSQL server (apt-get install postgresql)")
    return str(Path(found[-1]).parent.parent)


def _debian_python() -> str:
    found = sorted(glob.glob("/usr/bin/python3.[0-9]*"), key=_version_key)
    found = [path for path in found if re.fullmatch(r"/usr/bin/python3\.\d+", path)]
    if not found:
        raise SystemExit("images.py: no Debian Python (apt-get install python3-minimal)")
    return found[-1]


def _version_key(path: str) -> list[int]:
    return [int(part) for part in re.findall(r"\d+", path)]


def _resolve(path: str) -> str:
    return os.path.realpath(path)


def _libraries(binary: str) -> set[str]:
    """The shared libraries ``binary`` loads (none for a static one), by their real paths."""
    result = subprocess.run(["ldd", binary], capture_output=True, text=True, check=False)
    found: set[str] = set()
    for line in result.stdout.splitlines():
        match = re.search(r"(/\S+)\s+\(0x", line)
        if match:
            found.add(match.group(1))
    return found


def _is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == b"\x7fELF"
    except OSError:
        return False


def _layer(image: Image) -> bytes:
    """An uncompressed tar of the image's files, their libraries and its directories."""
    entries: dict[str, tuple[str, str | None]] = {}  # path in image -> (source, link target)
    libraries: set[str] = set()
    for source, target in image.files:
        if os.path.isdir(source):
            for folder, dirs, names in os.walk(source):
                dirs[:] = [d for d in dirs if d not in SKIPPED_DIRECTORIES]
                for name in names:
                    if name.startswith(SKIPPED_FILES):
                        continue
                    path = os.path.join(folder, name)
                    inside = target + path[len(source) :]
                    if os.path.islink(path) and not os.path.exists(path):
                        continue
                    entries[inside] = (os.path.realpath(path), None)
                    if name.endswith(".so") or ".so." in name:
                        libraries |= _libraries(path)
        else:
            entries[target] = (_resolve(source), None)
            if _is_elf(source):
                libraries |= _libraries(source)
    for library in sorted(libraries):
        real = os.path.realpath(library)
        entries.setdefault(library, (real, None))
        # The loader is asked for by its canonical name (/lib64/ld-linux-x86-64.so.2).
    if any(path.startswith("/lib64/") for path in entries) or libraries:
        entries.setdefault(
            "/lib64/ld-linux-x86-64.so.2", (_resolve("/lib64/ld-linux-x86-64.so.2"), None)
        )

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        made: set[str] = set()

        def directory(path: str, mode: int = 0o755) -> None:
            parts = Path(path).parts[1:]
            for index in range(1, len(parts) + 1):
                name = "/".join(parts[:index])
                if name in made:
                    continue
                made.add(name)
                info = tarfile.TarInfo(name)
                info.type = tarfile.DIRTYPE
                info.mode = mode if index == len(parts) else 0o755
                info.mtime = 0
                tar.addfile(info)

        for path, mode in sorted(image.directories.items()):
            directory(path, mode)
        for path in sorted(entries):
            source, _ = entries[path]
            directory(str(Path(path).parent))
            info = tar.gettarinfo(source, arcname=path.lstrip("/"))
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = 0
            with open(source, "rb") as handle:
                tar.addfile(info, handle)
        for path, (content, mode) in sorted(image.texts.items()):
            directory(str(Path(path).parent))
            data = content.encode()
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _blob(tar: tarfile.TarFile, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size, info.mtime = len(data), 0
    tar.addfile(info, io.BytesIO(data))
    return f"sha256:{digest}"


def build(image: Image, out: Path) -> None:
    layer = _layer(image)
    compressed = gzip.compress(layer, compresslevel=1, mtime=0)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": image.entrypoint,
            "Env": image.env or ["PATH=/usr/local/bin:/usr/bin:/bin"],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(layer).hexdigest()}"]},
    }
    with tarfile.open(out.with_suffix(".tmp"), "w") as tar:
        layer_digest = _blob(tar, compressed)
        config_bytes = json.dumps(config, sort_keys=True).encode()
        config_digest = _blob(tar, config_bytes)
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config_bytes),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest,
                    "size": len(compressed),
                }
            ],
        }
        manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
        manifest_digest = _blob(tar, manifest_bytes)
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": manifest_digest,
                    "size": len(manifest_bytes),
                    "platform": {"architecture": "amd64", "os": "linux"},
                    "annotations": {
                        "io.containerd.image.name": image.reference,
                        "org.opencontainers.image.ref.name": image.tag,
                    },
                }
            ],
        }
        for name, data in (
            ("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode()),
            ("index.json", json.dumps(index).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
    out.with_suffix(".tmp").rename(out)


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit("usage: images.py OUT_DIR BIN_DIR")
    out_dir, bin_dir = Path(sys.argv[1]), Path(sys.argv[2])
    out_dir.mkdir(parents=True, exist_ok=True)
    for image in images(bin_dir):
        target = out_dir / f"{image.name}.tar"
        build(image, target)
        print(
            f"[kube-build] image {image.reference}: {target.stat().st_size // 1024} KiB",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
