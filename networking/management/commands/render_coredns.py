"""Print (or write) the CoreDNS rewrite rule that serves the .internal zone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from networking.cluster.coredns import render_snippet


class Command(BaseCommand):
    help = "Render the CoreDNS rewrite rule for the .internal zone."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--cluster-domain", default="cluster.local")
        parser.add_argument("--output", type=Path, help="write here instead of stdout")

    def handle(self, *args: Any, cluster_domain: str, output: Path | None, **options: Any) -> None:
        snippet = render_snippet(cluster_domain)
        if output is None:
            self.stdout.write(snippet, ending="")
        else:
            output.write_text(snippet)
            self.stdout.write(f"Wrote {output}")
