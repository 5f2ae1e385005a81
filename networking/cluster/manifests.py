"""The embedded backend: each namespace's objects as YAML files, one folder per namespace.

The folder is usable as a GitOps source or with ``kubectl apply -f <dir>/<namespace>``: files
are prefixed so the Namespace sorts first. Unchanged files are not rewritten, and files of
objects that are no longer desired are removed.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import yaml

from networking.cluster.backends import ApplyResult
from networking.cluster.desired import KINDS, DesiredState
from networking.cluster.errors import PermanentClusterError

SUFFIX = ".yaml"


def _filename(kind: str, name: str) -> str:
    return f"{KINDS.index(kind):02d}-{kind.lower()}-{name}{SUFFIX}"


class ManifestsBackend:
    name = "manifests"

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)

    def apply(self, desired: DesiredState) -> ApplyResult:
        """Write the objects; workloads are the deploy system's, so there are none to patch."""
        result = ApplyResult()
        namespace, objects = desired.namespace, desired.objects
        folder = self.directory / namespace
        try:
            folder.mkdir(parents=True, exist_ok=True)
            existing = {path.name: path for path in folder.glob(f"[0-9][0-9]-*{SUFFIX}")}
            wanted: set[str] = set()
            for (kind, name), obj in objects.items():
                filename = _filename(kind, name)
                wanted.add(filename)
                text = yaml.safe_dump(obj, sort_keys=False)
                path = folder / filename
                if filename in existing and path.read_text() == text:
                    continue
                verb = "updated" if filename in existing else "created"
                self._write(path, text)
                result.changes.append(f"{verb} {kind} {name}")
            for filename in sorted(set(existing) - wanted):
                existing[filename].unlink()
                order, _, name = filename.removesuffix(SUFFIX).split("-", 2)
                result.changes.append(f"deleted {KINDS[int(order)]} {name}")
        except OSError as error:
            raise PermanentClusterError(
                f"Could not write manifests under {folder}: {error.strerror or error}."
            ) from None
        return result

    @staticmethod
    def _write(path: Path, text: str) -> None:
        # Write-then-rename, so a reader (kubectl, a GitOps agent) never sees half a file.
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
        with os.fdopen(handle, "w") as file:
            file.write(text)
        os.replace(temporary, path)
