"""The embedded backend: each namespace's objects as YAML files, one folder per namespace.

The folder is usable as a GitOps source or with ``kubectl apply -f <dir>/<namespace>``: files
are prefixed so the Namespace sorts first. Unchanged files are not rewritten, and files of
objects that are no longer desired are removed.

Each file is written to a hidden ``.<name>.<random>.tmp`` beside it and renamed into place, so
a reader never sees half a file. A writer killed between the two leaves its temporary file
behind (it may hold a Secret): every apply removes those older than a few seconds. Never all of
them: the lease makes one pass per namespace the rule, but a pass that outlived its lease may
still be finishing a write, and taking its file would fail its rename. Temporary files never
count as objects: only ``NN-<kind>-<name>.yaml`` does, and ``kubectl apply -f`` reads only
``.yaml``, ``.yml`` and ``.json``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import yaml

from networking.cluster.backends import ApplyResult
from networking.cluster.desired import KINDS, Changes, DesiredState, KubeObject
from networking.cluster.errors import PermanentClusterError
from networking.cluster.probe import PodOutcome, ReadyEndpoints

NO_CLUSTER = (
    "Test connection runs a probe in the cluster, and this dashboard has none: it writes "
    "manifests to a folder (CLUSTER_BACKEND=manifests). Run the dashboard against your "
    "cluster (CLUSTER_BACKEND=kubernetes) to test connections."
)

SUFFIX = ".yaml"
TEMPORARY_SUFFIX = ".tmp"
# A write renames its temporary file within milliseconds: one this old was left by a dead writer.
ABANDONED_AFTER_SECONDS = 5.0


def _cause(error: OSError) -> str:
    """The operating system's words for ``error`` ("Permission denied"), without the path
    ``str(error)`` would name: the folder is the server's business, so the log has it."""
    return (error.strerror or type(error).__name__).lower()


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
            self._remove_abandoned_temporaries(folder)
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
                f"Could not write manifests for this project ({_cause(error)}); the worker's log "
                "says where.",
                detail=f"under {folder}: {error}",
            ) from None
        return result

    def apply_changes(self, desired: DesiredState, changes: Changes) -> ApplyResult:
        """Files are cheap to compare: write the whole namespace as ``apply`` does."""
        return self.apply(desired)

    def managed_namespaces(self) -> set[str]:
        """Every namespace folder: the directory holds nothing but ours."""
        try:
            return {
                path.name
                for path in self.directory.iterdir()
                if path.is_dir() and not path.name.startswith(".")
            }
        except FileNotFoundError:
            return set()
        except OSError as error:
            raise PermanentClusterError(
                f"Could not list the manifests ({_cause(error)}); the worker's log says where.",
                detail=f"under {self.directory}: {error}",
            ) from None

    def delete_namespace(self, namespace: str) -> bool:
        """Remove the namespace's folder of manifests."""
        folder = self.directory / namespace
        if not namespace or namespace.startswith(".") or "/" in namespace:
            return False  # not a folder of ours
        try:
            shutil.rmtree(folder)
        except FileNotFoundError:
            return False
        except OSError as error:
            raise PermanentClusterError(
                f"Could not remove this project's manifests ({_cause(error)}); the worker's log "
                "says where.",
                detail=f"under {folder}: {error}",
            ) from None
        return True

    @staticmethod
    def _write(path: Path, text: str) -> None:
        # Write-then-rename, so a reader (kubectl, a GitOps agent) never sees half a file.
        handle, temporary = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX
        )
        try:
            with os.fdopen(handle, "w") as file:
                file.write(text)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    @staticmethod
    def _remove_abandoned_temporaries(folder: Path) -> None:
        cutoff = time.time() - ABANDONED_AFTER_SECONDS
        for path in folder.glob(f".*{TEMPORARY_SUFFIX}"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
            except FileNotFoundError:
                continue  # renamed into place, or removed by another pass, meanwhile

    # -- no pods run here ---------------------------------------------------------------------

    def start_probe(self, pod: KubeObject) -> None:
        raise PermanentClusterError(NO_CLUSTER)

    def probe_outcome(self, namespace: str, name: str) -> PodOutcome | None:
        return None

    def delete_probe(self, namespace: str, name: str) -> None:
        return None

    def ready_endpoints(self, namespace: str, service: str) -> ReadyEndpoints:
        raise PermanentClusterError(NO_CLUSTER)
