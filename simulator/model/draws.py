"""Fast random draws for the offline model (pure Python, millions of registrants).

`Draws` is the `simulator.behaviour.Draw` protocol (`random`, `uniform`, `lognormal`), so the
model takes its people's decisions through the same behaviour functions as the live driver and
Locust, at table-backed speed; plus what only the model needs (`residual`, `poisson`).
"""

from __future__ import annotations

import math
import random
from statistics import NormalDist

# Standard normal quantiles at 8,192 evenly spaced probabilities: one table look-up per
# lognormal draw instead of `random.gauss` (pure Python, the model's hot spot). The
# discretisation error is far below anything a wave parameter is known to.
NORMAL_TABLE = tuple(NormalDist().inv_cdf((k + 0.5) / 8192) for k in range(8192))


class Draws:
    """The model's one RNG and the distributions it needs."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed * 7919 + 17)
        self.random = self.rng.random

    def lognormal(self, median: float, sigma: float) -> float:
        return median * math.exp(sigma * NORMAL_TABLE[int(self.random() * 8192)])

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * self.random()

    def residual(self, low: float, high: float) -> float:
        """Time to the next tick of a renewal process whose gaps are U(low, high), seen from a
        random moment: a length-biased gap (longer gaps are likelier to contain the moment),
        then a uniform point of it."""
        while True:
            gap = self.uniform(low, high)
            if self.random() * high <= gap:
                return gap * self.random()

    def poisson(self, mean: float) -> int:
        """Knuth's method for small means, the normal approximation above 50."""
        if mean <= 0:
            return 0
        if mean > 50:
            return max(0, round(self.rng.gauss(mean, math.sqrt(mean))))
        limit, k, product = math.exp(-mean), 0, self.random()
        while product > limit:
            k += 1
            product *= self.random()
        return k
