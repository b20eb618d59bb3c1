"""The Redis broker's pub/sub lag clock (trio_djws/brokers/lag.py)."""

from __future__ import annotations

from trio_djws.brokers import lag
from trio_djws.brokers.lag import EchoClock


def test_an_echo_is_timed_once_and_earlier_lost_ones_are_dropped() -> None:
    clock = EchoClock()
    clock.sent("c", b"one")
    clock.sent("c", b"two")
    clock.sent("d", b"one")
    assert clock.received("c", b"unknown") is None  # not noted: nothing dropped
    seconds = clock.received("c", b"two")  # "one" never came back: dropped with it
    assert seconds is not None and seconds >= 0
    assert clock.received("c", b"one") is None
    assert clock.received("c", b"two") is None  # timed once
    assert clock.received("d", b"one") is not None


def test_the_clock_is_bounded() -> None:
    clock = EchoClock()
    for i in range(lag.DEPTH + 10):
        clock.sent("c", str(i).encode())
    assert clock.received("c", b"0") is None  # pushed out by the newer ones
    assert clock.received("c", str(lag.DEPTH + 9).encode()) is not None
    for i in range(lag.CHANNELS + 1):
        clock.sent(f"channel {i}", b"x")
    assert clock.received("channel 0", b"x") is None  # forgotten when the table was full
    assert clock.received(f"channel {lag.CHANNELS}", b"x") is not None
