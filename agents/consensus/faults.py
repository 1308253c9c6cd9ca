"""Communication faults between agents (docs/equations.md).

Messages travel only along the communication graph's edges, one message per
directed edge ``i -> j`` (both ways for every edge) per exchange. A step of
the dual modes ``paper`` and ``pi`` is one exchange; a step of ``atc`` or
``averaging`` with K rounds is K exchanges.

Faults (``FaultModel``):
    drop_probability  each message is lost independently with this probability.
    delay_steps       a message sent at step t arrives at step t + d (for atc and
                      averaging, round k of step t arrives in round k of step t + d).
    silent            intervals ``(agent, start_step, end_step)``: the agent sends
                      nothing at steps ``start_step <= t < end_step`` (half-open,
                      like ``range``); it still receives and updates itself.

A receiver always uses the last value it received on each edge; before the first
delivery that is the initial value (0, matching the initial lambda). Messages
still in flight when a run ends are never delivered. Randomness comes only from
the numpy ``Generator`` handed to :class:`MessageChannel`, so a seed fixes every
drop.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FaultModel:
    """Drop probability, delay and silent intervals of the agents' messages."""

    drop_probability: float = 0.0
    delay_steps: int = 0
    silent: Sequence[tuple[int, int, int]] = ()

    def __post_init__(self) -> None:
        p = float(self.drop_probability)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"FaultModel.drop_probability must lie in [0, 1], got {p}")
        object.__setattr__(self, "drop_probability", p)
        if int(self.delay_steps) != self.delay_steps or self.delay_steps < 0:
            raise ValueError(
                f"FaultModel.delay_steps must be an integer >= 0, got {self.delay_steps}"
            )
        object.__setattr__(self, "delay_steps", int(self.delay_steps))
        intervals = []
        for k, item in enumerate(self.silent):
            try:
                agent, start, end = (int(x) for x in item)
            except (TypeError, ValueError):
                raise ValueError(
                    f"FaultModel.silent[{k}] must be (agent, start_step, end_step), got {item!r}"
                ) from None
            if agent < 0 or start < 0 or end < start:
                raise ValueError(
                    f"FaultModel.silent[{k}] = {item!r}: need agent >= 0 and "
                    "0 <= start_step <= end_step"
                )
            intervals.append((agent, start, end))
        object.__setattr__(self, "silent", tuple(intervals))

    @property
    def is_trivial(self) -> bool:
        """True when no message is ever dropped, delayed or withheld."""
        return (self.drop_probability == 0.0 and self.delay_steps == 0
                and all(end <= start for _, start, end in self.silent))

    def check_agents(self, n: int) -> None:
        """Raise unless every silent agent is one of ``0..n-1``."""
        for k, (agent, _, _) in enumerate(self.silent):
            if agent >= n:
                raise ValueError(
                    f"FaultModel.silent[{k}]: agent {agent} does not exist (agents 0..{n - 1})"
                )

    def silent_mask(self, step: int, n: int) -> np.ndarray:
        """Bool (n,): which agents send nothing at ``step``."""
        mask = np.zeros(n, dtype=bool)
        for agent, start, end in self.silent:
            if start <= step < end:
                mask[agent] = True
        return mask


class MessageChannel:
    """The directed edges ``src[e] -> dst[e]`` under a fault model.

    ``received[e]`` is the last value agent ``dst[e]`` got from ``src[e]``.
    """

    def __init__(
        self,
        faults: FaultModel,
        src: np.ndarray,
        dst: np.ndarray,
        n: int,
        exchanges_per_step: int,
        rng: np.random.Generator,
    ) -> None:
        faults.check_agents(n)
        self.faults = faults
        self.src = np.asarray(src, dtype=np.int64)
        self.dst = np.asarray(dst, dtype=np.int64)
        self.n = int(n)
        self.rng = rng
        self.delay_exchanges = faults.delay_steps * int(exchanges_per_step)
        self.received = np.zeros(self.src.shape[0])
        self.pending: deque[tuple[np.ndarray, np.ndarray]] = deque()

    @property
    def n_messages(self) -> int:
        """Number of directed edges, one message each per exchange."""
        return int(self.src.shape[0])

    def reset(self, initial: np.ndarray) -> None:
        """Forget messages in flight; every receiver holds ``initial`` of its sender."""
        self.received = np.asarray(initial, dtype=np.float64)[self.src].copy()
        self.pending.clear()

    def snapshot(self) -> dict[str, np.ndarray]:
        """Messages held and in flight, and the RNG's state (as JSON text, not a pickle)."""
        m = self.n_messages
        sent = np.array([s for s, _ in self.pending]).reshape(len(self.pending), m)
        ok = np.array([d for _, d in self.pending], dtype=bool).reshape(len(self.pending), m)
        return {"received": self.received.copy(), "pending_sent": sent, "pending_ok": ok,
                "rng_state": np.array(json.dumps(self.rng.bit_generator.state))}

    def restore(self, snap: dict[str, np.ndarray]) -> None:
        """Load the messages and RNG state of a :meth:`snapshot`.

        Raises:
            ValueError: if the snapshot holds a different number of messages.
        """
        received = np.asarray(snap["received"], dtype=np.float64)
        if received.shape != (self.n_messages,):
            raise ValueError(f"channel snapshot: {received.shape[0]} messages, "
                             f"expected {self.n_messages}")
        self.received = received.copy()
        self.pending = deque(
            (np.array(s, dtype=np.float64), np.array(d, dtype=bool))
            for s, d in zip(snap["pending_sent"], snap["pending_ok"], strict=True))
        self.rng.bit_generator.state = json.loads(str(snap["rng_state"]))

    def exchange(self, values: np.ndarray, step: int) -> np.ndarray:
        """Every agent sends ``values[agent]``; returns ``received`` after delivery."""
        sent = values[self.src]
        delivered = np.ones(self.n_messages, dtype=bool)
        p = self.faults.drop_probability
        if p > 0.0:
            delivered &= self.rng.random(self.n_messages) >= p
        if self.faults.silent:
            delivered &= ~self.faults.silent_mask(step, self.n)[self.src]
        self.pending.append((sent, delivered))
        if len(self.pending) > self.delay_exchanges:
            arrived, ok = self.pending.popleft()
            self.received[ok] = arrived[ok]
        return self.received
