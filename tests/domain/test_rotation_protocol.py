"""The no-downtime property of a rotation, checked over every interleaving of restarts.

The environments come from the real rotation code (``networking.rotation``) driving a real
SharedSecret row through its phases, and the acceptance check is the Python verifier we hand
customers (executed from the snippet text). Each workload, during a rolling restart, runs old
and new pods side by side; the protocol's one rule is that a phase's restarts begin only after
every workload has finished the previous phase's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from networking import rotation
from networking.models import SharedSecret
from tests.conftest import World

Env = dict[str, str]


def phase_environments(secret: SharedSecret) -> list[Env]:
    """The receiving workloads' environment before, and at each phase of, one rotation."""

    def env() -> Env:
        secret.refresh_from_db()
        return {key: value.reveal() for key, value in rotation.environment(secret).items()}

    configs = [env()]
    rotation.start_rotation(secret, actor=None)
    configs.append(env())  # accept new
    while rotation.advance(secret.pk) not in (None, "completed"):
        secret.refresh_from_db()
        if secret.rotation_phase == SharedSecret.Phase.GRACE:
            secret.grace_until = None  # waited out
            secret.save(update_fields=["grace_until"])
            continue  # the grace window changes no environment
        configs.append(env())
    return configs


def python_verifier(name: str) -> Callable[[Env, str], bool]:
    """``internal_secret_ok`` from the snippet customers paste, run against an environment."""
    code = rotation.verifier_snippets(name)["Python (Django)"].split("\n\nfrom django")[0]
    namespace: dict[str, Any] = {}
    exec(code, namespace)

    def accepts(env: Env, presented: str) -> bool:
        saved = {key: os.environ.get(key) for key in namespace["ACCEPTED_VARIABLES"]}
        try:
            for key in namespace["ACCEPTED_VARIABLES"]:
                os.environ.pop(key, None)
            os.environ.update(env)
            return bool(namespace["internal_secret_ok"](presented))
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    return accepts


State = tuple[frozenset[int], ...]  # per workload: the configs its live pods run


def reachable(workloads: int, phases: int, *, barrier: bool) -> Iterator[State]:
    """Every state of the rollout, across every order and overlap of the workloads' restarts."""
    start: State = tuple(frozenset({0}) for _ in range(workloads))
    seen = {start}
    stack = [start]
    while stack:
        state = stack.pop()
        yield state
        settled = [min(pods) for pods in state]
        for index, pods in enumerate(state):
            moves = []
            if len(pods) == 2:  # finish this workload's rollout
                moves.append(frozenset({max(pods)}))
            else:
                (config,) = pods
                # Start the next phase's rollout: with the barrier, only once every workload
                # has settled on this phase.
                if config + 1 < phases and (
                    not barrier or all(other == config for other in settled)
                ):
                    moves.append(frozenset({config, config + 1}))
            for move in moves:
                following = (*state[:index], move, *state[index + 1 :])
                if following not in seen:
                    seen.add(following)
                    stack.append(following)


def refused_requests(
    state: State, configs: list[Env], name: str, accepts: Callable[[Env, str], bool]
) -> list[tuple[int, int]]:
    live = {config for pods in state for config in pods}
    return [
        (sender, receiver)
        for sender in live
        for receiver in live
        if not accepts(configs[receiver], configs[sender][name])
    ]


@pytest.fixture
def configs(world: World) -> list[Env]:
    return phase_environments(world.secret)


def test_a_rotation_goes_through_three_restart_phases(configs: list[Env]) -> None:
    name = "INTERNAL_API_SECRET"
    old, new = configs[0][name], configs[-1][name]
    assert old != new
    assert configs == [
        {name: old},
        {name: old, f"{name}_NEXT": new},
        {name: new, f"{name}_PREVIOUS": old},
        {name: new},
    ]


@pytest.mark.parametrize("workloads", [2, 3])
def test_every_interleaving_of_restarts_accepts_every_request(
    configs: list[Env], workloads: int
) -> None:
    accepts = python_verifier("INTERNAL_API_SECRET")
    states = list(reachable(workloads, len(configs), barrier=True))
    assert len(states) > 10
    for state in states:
        assert refused_requests(state, configs, "INTERNAL_API_SECRET", accepts) == [], state


def test_without_the_barrier_some_request_is_refused(configs: list[Env]) -> None:
    """The check can fail: skipping the wait between phases does lose requests."""
    accepts = python_verifier("INTERNAL_API_SECRET")
    refused = [
        state
        for state in reachable(2, len(configs), barrier=False)
        if refused_requests(state, configs, "INTERNAL_API_SECRET", accepts)
    ]
    assert refused


def test_the_verifier_refuses_wrong_and_missing_values(configs: list[Env]) -> None:
    accepts = python_verifier("INTERNAL_API_SECRET")
    for env in configs:
        assert not accepts(env, "")
        assert not accepts(env, "guess")
        assert not accepts(env, env["INTERNAL_API_SECRET"] + "x")


NODE_HARNESS = """
const crypto = require('crypto')
const app = { use: (path, handler) => { app.handler = handler } }
%(snippet)s
const results = []
for (const [env, presented] of %(cases)s) {
  for (const key of ACCEPTED_VARIABLES) delete process.env[key]
  Object.assign(process.env, env)
  let allowed = false, status = 200
  const res = { status: (code) => { status = code; return { json: () => {} } } }
  app.handler({ headers: { 'x-internal-secret': presented } }, res, () => { allowed = true })
  results.push(allowed && status === 200)
}
console.log(JSON.stringify(results))
"""


def test_the_node_middleware_accepts_exactly_what_the_protocol_needs(configs: list[Env]) -> None:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI") == "true":
            pytest.fail("node is not installed")
        pytest.skip("node is not installed")
    name = "INTERNAL_API_SECRET"
    snippet = rotation.verifier_snippets(name)["Node.js (Express)"].replace(
        "const crypto = require('crypto')\n", ""
    )
    cases = []
    expected = []
    for env in configs:
        for sender in configs:
            cases.append([env, sender[name]])
            expected.append(sender[name] in env.values())
        cases.append([env, "wrong"])
        expected.append(False)
    script = NODE_HARNESS % {"snippet": snippet, "cases": json.dumps(cases)}
    output = subprocess.run(
        [node, "-e", script], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    assert json.loads(output) == expected
