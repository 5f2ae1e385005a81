"""``manage.py watch_cluster``: the watcher process (see ``networking/cluster/watcher.py``)."""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Watch the cluster and queue a reconcile for any project whose objects drift."

    def handle(self, *args: Any, **options: Any) -> None:
        stopped = threading.Event()

        def stop(signum: int, frame: Any) -> None:
            stopped.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        if settings.CLUSTER_BACKEND != "kubernetes":
            # The manifests backend writes files nobody else edits: there is nothing to watch.
            # Stay up, so every setup runs the same processes.
            self.stdout.write("The manifests backend has no cluster to watch; idle.")
            stopped.wait()
            return
        from networking import passes
        from networking.cluster.watcher import Watcher

        watcher = Watcher(passes.watch_view)
        thread = threading.Thread(target=watcher.run, name="watcher", daemon=True)
        thread.start()
        stopped.wait()
        watcher.stop()
        thread.join(timeout=5)
