"""The .internal zone: the CoreDNS rule in deploy/, replayed the way a pod's resolver asks.

The rule's regular expressions are applied with Python's ``re`` (the patterns use only syntax
that Go's RE2 reads the same way), against a cluster that has Services per namespace.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from networking.cluster.coredns import render_snippet

SNIPPET = Path(__file__).resolve().parents[2] / "deploy" / "coredns-internal-zone.conf"

# namespace -> Services in it
CLUSTER = {
    "prj-aaaa1111": {"api", "postgres", "background-worker"},
    "prj-bbbb2222": {"cache"},
}


def _rules() -> tuple[tuple[re.Pattern[str], str], tuple[re.Pattern[str], str]]:
    text = SNIPPET.read_text()
    question = re.search(r"^\s*name regex (\S+) (\S+)$", text, re.M)
    answer = re.search(r"^\s*answer name (\S+) (\S+)$", text, re.M)
    assert question and answer
    return (
        (re.compile(question.group(1)), question.group(2)),
        (re.compile(answer.group(1)), answer.group(2)),
    )


def _substitute(match: re.Match[str], template: str) -> str:
    return re.sub(r"\{(\d+)\}", lambda m: match.group(int(m.group(1))), template)


def resolve(name: str, from_namespace: str) -> str | None:
    """What a pod in ``from_namespace`` gets for ``name``: the answer's name and the Service."""
    (question, question_to), (answer, answer_to) = _rules()
    search = [f"{from_namespace}.svc.cluster.local", "svc.cluster.local", "cluster.local"]
    candidates = [f"{name}.{suffix}." for suffix in search] + [f"{name}."]
    for candidate in candidates:
        rewritten = candidate
        matched = question.match(candidate)
        if matched:
            rewritten = _substitute(matched, question_to)
        parts = rewritten.rstrip(".").split(".")
        # <service>.<namespace>.svc.cluster.local exists when that namespace has that Service.
        if len(parts) == 5 and parts[2:] == ["svc", "cluster", "local"]:
            service, namespace = parts[0], parts[1]
            if service in CLUSTER.get(namespace, set()):
                if matched:
                    back = answer.match(rewritten)
                    assert back, "the answer must be mapped back to the question's name"
                    assert _substitute(back, answer_to) == candidate
                return f"{service}.{namespace}"
    return None


def test_the_committed_snippet_is_the_rendered_one() -> None:
    assert SNIPPET.read_text() == render_snippet()


@pytest.mark.parametrize("service", sorted(CLUSTER["prj-aaaa1111"]))
def test_a_name_resolves_inside_its_own_project(service: str) -> None:
    assert resolve(f"{service}.internal", "prj-aaaa1111") == f"{service}.prj-aaaa1111"


def test_a_name_of_another_project_does_not_resolve() -> None:
    assert resolve("api.internal", "prj-bbbb2222") is None
    assert resolve("cache.internal", "prj-aaaa1111") is None


def test_each_project_gets_its_own_answer() -> None:
    CLUSTER["prj-bbbb2222"].add("api")
    try:
        assert resolve("api.internal", "prj-aaaa1111") == "api.prj-aaaa1111"
        assert resolve("api.internal", "prj-bbbb2222") == "api.prj-bbbb2222"
    finally:
        CLUSTER["prj-bbbb2222"].discard("api")


def test_ordinary_names_are_untouched() -> None:
    (question, _), _ = _rules()
    assert not question.match("api.prj-aaaa1111.svc.cluster.local.")
    assert not question.match("api.internal.kube-system.svc.cluster.local.")
    assert resolve("api", "prj-aaaa1111") == "api.prj-aaaa1111"


def test_a_custom_cluster_domain() -> None:
    assert "svc\\.corp\\.example" in render_snippet("corp.example")
