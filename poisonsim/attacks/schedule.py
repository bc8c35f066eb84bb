"""When the attacker gets a turn in the merged stream.

The attacker begins at stream index ``start`` and takes a share ``rate`` (rho)
of the events from there, constantly (each event is the attacker's with
probability ``rate``, or a share growing linearly to it over ``ramp`` events:
gradual drift) or in bursts of ``burst_length`` consecutive events
spaced so that the share is still ``rate``; it stops after ``budget`` events.

>>> import numpy as np
>>> s = Schedule(rate=0.5, start=2, schedule="bursts", burst_length=2)
>>> s.turns(np.random.default_rng(0), first=0, m=10, used=0).astype(int).tolist()
[0, 0, 1, 1, 0, 0, 1, 1, 0, 0]
>>> Schedule(rate=1.0, budget=3).turns(np.random.default_rng(0), 0, 5, used=1).astype(int).tolist()
[1, 1, 0, 0, 0]
"""

from __future__ import annotations

from typing import Annotated

import numpy as np

from poisonsim.base import Estimator
from poisonsim.registry import CHANNELS, Key

# -- injection channels: how the attacker's events get in, and so when it has a turn ---------------------

Start = Annotated[int, Key("stream index where the attacker begins", ge=0)]
Budget = Annotated[int | None, Key("most attacker events (default: no limit)", ge=0)]


class Channel(Estimator):
    """Base of every injection channel: how the attacker's events get in, and so when it has a turn."""

    kind: str = ""

    def turns_schedule(self, snapshot_every: int = 0) -> Schedule | FrontRunning:
        """When the attacker has a turn; ``snapshot_every``: the learner's published snapshot period."""
        raise NotImplementedError


@CHANNELS.register("stream", examples=[{"rate": 0.3}, {"rate": 0.2, "schedule": "bursts", "burst_length": 5}])
class Schedule(Channel):
    """Poison mixed into the stream at a share rho, constantly or in bursts."""

    offers = frozenset({"rate"})

    def __init__(
        self,
        rate: Annotated[float, Key("rho: share of attacker events in the merged stream", ge=0, le=1)] = 0.0,
        start: Start = 0,
        budget: Budget = None,
        schedule: Annotated[str, Key("constant share, or bursts", choices=("constant", "bursts"))] = "constant",
        burst_length: Annotated[int, Key("bursts: consecutive attacker events per burst", ge=1)] = 100,
        ramp: Annotated[
            int, Key("constant: events from start over which the share grows linearly from 0 to rho (0: at once)", ge=0)
        ] = 0,
    ):
        self.rate = rate
        self.start = start
        self.budget = budget
        self.schedule = schedule
        self.burst_length = burst_length
        self.ramp = ramp

    def turns_schedule(self, snapshot_every: int = 0) -> Schedule:
        return self

    def turns(self, rng: np.random.Generator, first: int, m: int, used: int) -> np.ndarray:
        """Mask of the attacker's turns among stream positions ``first .. first+m``.

        ``used`` is how many attacker events came before; the same draws are
        consumed whatever the outcome, so results do not depend on chunking.
        """
        positions = np.arange(first, first + m)
        draws = rng.random(m)
        if self.rate == 0:
            return np.zeros(m, dtype=bool)
        if self.schedule == "constant":
            share = np.clip((positions - self.start + 1) / self.ramp, 0, 1) if self.ramp else 1.0
            mask = draws < self.rate * share
        else:
            period = self.burst_length / self.rate
            offset = np.maximum(positions - self.start, 0)
            mask = offset - np.floor(offset / period) * period < self.burst_length
        mask &= positions >= self.start
        if self.budget is not None:
            mask &= np.cumsum(mask) + used <= self.budget
        return mask


class FrontRunning(Estimator):
    """Bursts timed to end ``lead`` events before each nominal snapshot.

    The attacker knows the published period ``every`` (K) but not the
    defender's jitter: its turns are the ``burst_size`` positions ending
    ``lead`` events before each event count ``j K`` (a snapshot taken once
    ``j K`` events were processed), from ``start`` on, within ``budget``.

    >>> import numpy as np
    >>> s = FrontRunning(every=5, burst_size=2, lead=1)
    >>> s.turns(np.random.default_rng(0), first=0, m=12, used=0).astype(int).tolist()
    [0, 0, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0]
    >>> FrontRunning(5, 2, budget=3).turns(np.random.default_rng(0), 0, 12, used=0).astype(int).tolist()
    [0, 0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0]
    """

    rate: float | None = None  # bursts: no set share of the stream

    def __init__(self, every: int, burst_size: int, lead: int = 0, start: int = 0, budget: int | None = None):
        if every < 1:
            raise ValueError(f"snapshot_every: expected an integer >= 1, got {every!r}")
        if burst_size < 1 or lead < 0 or burst_size + lead > every:
            raise ValueError(
                f"burst_size, lead: expected burst_size >= 1, lead >= 0 and their sum <= {every}, "
                f"got {burst_size}, {lead}"
            )
        self.every = every
        self.burst_size = burst_size
        self.lead = lead
        self.start = start
        self.budget = budget

    def turns(self, rng: np.random.Generator, first: int, m: int, used: int) -> np.ndarray:
        """Mask of the attacker's turns among stream positions ``first .. first+m`` (no draws needed)."""
        shifted = np.arange(first, first + m) + self.lead + self.burst_size
        mask = (shifted % self.every < self.burst_size) & (shifted >= self.every)
        mask &= np.arange(first, first + m) >= self.start
        if self.budget is not None:
            mask &= np.cumsum(mask) + used <= self.budget
        return mask


@CHANNELS.register("front-running", examples=[{"burst_size": 5, "lead": 1}])
class FrontRunningChannel(Channel):
    """Bursts sent just before each snapshot the learner publishes."""

    offers = frozenset({"runs-ahead"})

    def __init__(
        self,
        burst_size: Annotated[int, Key("attacker events in the burst before each snapshot", ge=1)] = 50,
        lead: Annotated[int, Key("events between the end of a burst and the snapshot", ge=0)] = 0,
        start: Start = 0,
        budget: Budget = None,
    ):
        self.burst_size, self.lead, self.start, self.budget = burst_size, lead, start, budget

    def turns_schedule(self, snapshot_every: int = 0) -> FrontRunning:
        return FrontRunning(snapshot_every, self.burst_size, self.lead, self.start, self.budget)


@CHANNELS.register("split-view", examples=[{"controlled_share": 0.2}])
class SplitViewChannel(Channel):
    """References whose content the attacker swaps after vetting (expired domains)."""

    offers = frozenset({"swaps-content"})

    def __init__(
        self,
        controlled_share: Annotated[float, Key("share of references the attacker controls", ge=0, le=1)] = 0.0,
        start: Start = 0,
        budget: Budget = None,
    ):
        self.controlled_share, self.start, self.budget = controlled_share, start, budget

    def turns_schedule(self, snapshot_every: int = 0) -> Schedule:
        return Schedule(self.controlled_share, self.start, self.budget)
