"""The discovery rank: which alerts an astronomer should eyeball first (DESIGN §4).

The *teach* queue asks for the labels that teach the models most; the *discover*
queue shows first the alerts most likely to be real extragalactic transients, ranked
the way the ATLAS Virtual Research Assistant ranks them for eyeballing (Stevance et
al.): each alert is a point ``(p_real, p_gal)`` of the two models' calibrated
probabilities, and its rank is how close it lies to the corner ``(1, 0)`` (surely
real, surely not galactic), on a scale from 0 to 10::

    rank = 10 * (1 - sqrt(((1 - p_real)**2 + p_gal**2) / 2))

so that 10 is reached only at ``p_real = 1, p_gal = 0``, 0 only at the opposite
corner (bogus and galactic), and the rank falls whenever ``p_real`` falls or ``p_gal``
rises (strictly, away from the corner itself). Use calibrated probabilities
(:mod:`finkvra.calibration`): the rank compares alerts across models, and the
thresholds below only mean something if a probability of 0.8 is right 80 % of the time.

Routing, as the VRA does: at or above ``eyeball`` an alert goes to the humans, below
``garbage`` it is set aside automatically, in between it waits (``hold``). An alert
that a model could not score (NaN) is ``unranked``, never garbage.

Examples
--------
>>> discovery_rank([1.0, 0.9, 0.0], [0.0, 0.1, 1.0]).round(2)
array([10.,  9.,  0.])
>>> DiscoveryRouting(eyeball=7.0, garbage=1.5).route([9.0, 4.0, 1.0]).tolist()
['eyeball', 'hold', 'garbage']
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["MAX_RANK", "ROUTES", "DiscoveryRouting", "discovery_rank"]

#: The rank of a surely real, surely extragalactic alert.
MAX_RANK = 10.0
#: Where :meth:`DiscoveryRouting.route` can send an alert.
ROUTES: tuple[str, ...] = ("eyeball", "hold", "garbage", "unranked")


def _probabilities(values: Any, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    finite = array[np.isfinite(array)]
    if finite.size and (finite.min() < 0 or finite.max() > 1):
        raise ValueError(f"{what} must lie in [0, 1] (NaN for an alert the model did not score)")
    return array


def discovery_rank(p_real: Any, p_gal: Any) -> np.ndarray:
    """The 0-10 rank of each alert from P(real) and P(galactic); NaN where either is NaN.

    Arrays broadcast (a scalar ``p_gal`` ranks a batch by ``p_real`` alone).
    """
    real = _probabilities(p_real, "p_real")
    gal = _probabilities(p_gal, "p_gal")
    distance = np.sqrt(((1.0 - real) ** 2 + gal**2) / 2.0)
    rank = MAX_RANK * (1.0 - distance)
    return np.clip(rank, 0.0, MAX_RANK)


@dataclass(frozen=True)
class DiscoveryRouting:
    """Thresholds on the rank: ``eyeball`` and above to the humans, below ``garbage`` away.

    Parameters
    ----------
    eyeball
        Lowest rank shown for eyeballing (default 7: both models fairly sure).
    garbage
        Ranks below this are set aside automatically (default 1.5). ``0`` sets nothing
        aside; ``garbage == eyeball`` leaves nothing on hold.
    """

    eyeball: float = 7.0
    garbage: float = 1.5

    def __post_init__(self) -> None:
        for name in ("eyeball", "garbage"):
            value = float(getattr(self, name))
            if not math.isfinite(value) or not 0 <= value <= MAX_RANK:
                raise ValueError(f"discovery {name} threshold must lie in [0, 10], got {value}")
        if float(self.garbage) > float(self.eyeball):
            raise ValueError(
                f"discovery garbage threshold ({self.garbage}) is above the eyeball "
                f"threshold ({self.eyeball}): lower garbage or raise eyeball"
            )

    def route(self, rank: Any) -> np.ndarray:
        """``'eyeball'``, ``'hold'``, ``'garbage'`` or ``'unranked'`` (NaN) per alert."""
        values = np.asarray(rank, dtype=float)
        routes = np.full(values.shape, "hold", dtype=object)
        routes[values >= float(self.eyeball)] = "eyeball"
        routes[values < float(self.garbage)] = "garbage"
        routes[np.isnan(values)] = "unranked"
        return routes

    def route_probabilities(self, p_real: Any, p_gal: Any) -> np.ndarray:
        """:meth:`route` of :func:`discovery_rank`."""
        return self.route(discovery_rank(p_real, p_gal))
