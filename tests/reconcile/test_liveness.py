"""Whether a watcher is watching, as a pass asks it on PostgreSQL: one watcher holds the lock,
a pass tries it for an instant and holds nothing after, in a transaction or not."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db import connection, transaction

from networking.cluster import liveness

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="on SQLite a heartbeat row says it"
)


@pytest.fixture
def signals() -> Iterator[list[liveness.Signal]]:
    made: list[liveness.Signal] = []
    yield made
    for signal in made:
        signal.close()


def watcher(signals: list[liveness.Signal]) -> liveness.Signal:
    signal = liveness.Signal()
    signals.append(signal)
    return signal


@pytest.mark.django_db
def test_of_two_watchers_one_says_it_and_the_other_takes_over(
    signals: list[liveness.Signal], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(liveness, "HOLD_AGAIN_SECONDS", 3600.0)  # however slow this machine
    first, second = watcher(signals), watcher(signals)
    first.update(True)
    second.update(True)
    assert (first.held, second.held) == (True, False)
    assert liveness.watching()
    first.update(False)  # a watch of the first one failed
    assert not liveness.watching()
    second.update(True)  # refused a moment ago: it does not ask again at once
    assert not second.held
    monkeypatch.setattr(liveness, "HOLD_AGAIN_SECONDS", 0.0)  # its round a while later
    second.update(True)
    assert second.held
    assert liveness.watching()


@pytest.mark.django_db
def test_asking_in_a_transaction_leaves_nothing_held(signals: list[liveness.Signal]) -> None:
    """A pass may claim inside a transaction that stays open a while: its question must not
    keep a watcher that starts meanwhile from saying it is watching."""
    with transaction.atomic():
        assert not liveness.watching()
        signal = watcher(signals)
        signal.update(True)
        assert signal.held
        assert liveness.watching()


@pytest.mark.django_db
def test_a_watcher_that_lets_go_stops_saying_it_at_once(signals: list[liveness.Signal]) -> None:
    signal = watcher(signals)
    signal.update(True)
    assert liveness.watching()
    signal.close()
    assert not liveness.watching()
    signal.update(True)
    assert liveness.watching()
