"""``scripts/test-cluster/build.sh --print-sources``: the deb-src configuration it derives from
the machine's own apt sources, here a fake apt configuration pointed at through APT_CONFIG."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.kubeapi import BUILD_SCRIPT

pytestmark = pytest.mark.skipif(
    shutil.which("apt-config") is None, reason="build.sh derives its sources with Debian's apt"
)

DEB822_SOURCES = """\
Types: deb
# a comment apt ignores
URIs: file:/srv/archive/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/archive.gpg

Types: deb deb-src
URIs: file:/srv/archive/security
Suites: bookworm-security
Components: main contrib
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mQINBGPL
 -----END PGP PUBLIC KEY BLOCK-----

Types: deb-src
URIs: file:/srv/archive/sources-only
Suites: bookworm
Components: main
"""


def print_sources(apt_etc: Path) -> subprocess.CompletedProcess[str]:
    (apt_etc / "apt.conf.d").mkdir(parents=True, exist_ok=True)
    (apt_etc / "sources.list.d").mkdir(exist_ok=True)
    config = apt_etc / "test-apt.conf"
    config.write_text(f'Dir::Etc "{apt_etc}/";\n')
    return subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--print-sources"],
        env={"PATH": "/usr/bin:/bin", "APT_CONFIG": str(config)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_it_turns_deb_entries_of_both_formats_into_deb_src(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text(
        "# deb file:/srv/commented bookworm main\n"
        "deb [signed-by=/usr/share/keyrings/archive.gpg] file:/srv/archive/debian bookworm main\n"
        "deb-src file:/srv/archive/already-src bookworm main\n"
    )
    (tmp_path / "sources.list.d/extra.list").write_text("  deb file:/srv/extra bookworm contrib\n")
    (tmp_path / "sources.list.d/archive.sources").write_text(DEB822_SOURCES)
    (tmp_path / "sources.list.d/vendor.list.disabled-by-farm").write_text(
        "deb file:/srv/disabled-list bookworm main\n"
    )
    (tmp_path / "sources.list.d/vendor.sources.disabled-by-farm").write_text(
        "Types: deb\nURIs: file:/srv/disabled-sources\nSuites: x\nComponents: main\n"
    )

    result = print_sources(tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "# sources.list\n"
        "deb-src [signed-by=/usr/share/keyrings/archive.gpg] file:/srv/archive/debian"
        " bookworm main\n"
        "deb-src file:/srv/extra bookworm contrib\n"
        "# sources.list.d/machine.sources\n"
        "Types: deb-src\n"
        "URIs: file:/srv/archive/debian\n"
        "Suites: bookworm bookworm-updates\n"
        "Components: main\n"
        "Signed-By: /usr/share/keyrings/archive.gpg\n"
        "\n"
        "Types: deb-src\n"
        "URIs: file:/srv/archive/security\n"
        "Suites: bookworm-security\n"
        "Components: main contrib\n"
        "Signed-By:\n"
        " -----BEGIN PGP PUBLIC KEY BLOCK-----\n"
        " .\n"
        " mQINBGPL\n"
        " -----END PGP PUBLIC KEY BLOCK-----\n"
    )


def test_it_refuses_when_apt_has_no_deb_entries(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d/vendor.list.disabled-by-farm").write_text(
        "deb file:/srv/disabled-list bookworm main\n"
    )

    result = print_sources(tmp_path)

    assert result.returncode != 0
    assert "no deb entries in apt's sources" in result.stderr
    assert "configure apt with a Debian bookworm source" in result.stderr
