"""The discovery rank (finkvra.discovery): monotone, 10 only for real-and-extragalactic,
thresholds that route as configured."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from finkvra import discovery
from finkvra.discovery import MAX_RANK, DiscoveryRouting, discovery_rank

GRID = np.linspace(0.0, 1.0, 101)


def test_rank_is_monotone_in_both_probabilities():
    real, gal = np.meshgrid(GRID, GRID, indexing="ij")  # real along axis 0, gal along 1
    rank = discovery_rank(real, gal)
    assert rank.shape == real.shape
    assert ((rank >= 0) & (rank <= MAX_RANK)).all()
    # More likely real: never lower; more likely galactic: never higher.
    assert (np.diff(rank, axis=0) >= 0).all()
    assert (np.diff(rank, axis=1) <= 0).all()
    # Strictly, everywhere but along the edges through the corner (1, 0).
    assert (np.diff(rank[:, 1:], axis=0) > 0).all()
    assert (np.diff(rank[:-1, :], axis=1) < 0).all()


def test_ten_only_for_surely_real_and_extragalactic():
    real, gal = np.meshgrid(GRID, GRID, indexing="ij")
    rank = discovery_rank(real, gal)
    tens = np.argwhere(rank == MAX_RANK)
    assert tens.tolist() == [[100, 0]]  # p_real = 1, p_gal = 0
    assert discovery_rank(1.0, 0.0) == MAX_RANK
    assert discovery_rank(0.0, 1.0) == 0.0
    # Every other pure case is far from 10: bogus (any gal), or real but galactic.
    assert discovery_rank(0.0, 0.0) < 3 and discovery_rank(1.0, 1.0) < 3
    assert discovery_rank(0.999, 0.001) < MAX_RANK


def test_rank_values_computed_independently():
    rng = np.random.default_rng(0)
    real, gal = rng.random(200), rng.random(200)
    expected = [10 - 10 * np.hypot(1 - r, g) / np.sqrt(2) for r, g in zip(real, gal, strict=True)]
    np.testing.assert_allclose(discovery_rank(real, gal), expected, rtol=1e-12)
    np.testing.assert_allclose(discovery_rank(real, 0.0), 10 - 10 * (1 - real) / np.sqrt(2))


def test_nan_and_bad_probabilities():
    rank = discovery_rank([0.9, np.nan, 0.5], [0.1, 0.2, np.nan])
    assert np.isfinite(rank[0]) and np.isnan(rank[1:]).all()
    with pytest.raises(ValueError, match="p_real"):
        discovery_rank([1.2], [0.0])
    with pytest.raises(ValueError, match="p_gal"):
        discovery_rank([0.5], [-0.1])


@pytest.mark.parametrize(("eyeball", "garbage"), [(7.0, 1.5), (5.0, 5.0), (9.5, 0.0), (3.0, 2.0)])
def test_thresholds_route_as_configured(eyeball, garbage):
    routing = DiscoveryRouting(eyeball=eyeball, garbage=garbage)
    ranks = np.concatenate([np.linspace(0, 10, 201), [eyeball, garbage, np.nan]])
    routes = routing.route(ranks)
    for rank, route in zip(ranks, routes, strict=True):
        if np.isnan(rank):
            expected = "unranked"
        elif rank >= eyeball:
            expected = "eyeball"
        elif rank < garbage:
            expected = "garbage"
        else:
            expected = "hold"
        assert route == expected, (rank, route)
    assert routing.route(eyeball) == "eyeball"  # the threshold itself is shown
    if garbage > 0:
        assert routing.route(np.nextafter(garbage, 0)) == "garbage"
    assert routing.route(garbage) in ("hold", "eyeball")


def test_routing_from_probabilities_and_defaults():
    routing = DiscoveryRouting()
    assert (routing.eyeball, routing.garbage) == (7.0, 1.5)
    routes = routing.route_probabilities([0.98, 0.6, 0.05, np.nan], [0.02, 0.5, 0.95, 0.1])
    assert routes.tolist() == ["eyeball", "hold", "garbage", "unranked"]


def test_bad_thresholds_name_the_fix():
    with pytest.raises(ValueError, match="above the eyeball"):
        DiscoveryRouting(eyeball=2.0, garbage=3.0)
    with pytest.raises(ValueError, match=r"eyeball threshold must lie in \[0, 10\]"):
        DiscoveryRouting(eyeball=11.0)
    with pytest.raises(ValueError, match="garbage"):
        DiscoveryRouting(garbage=float("nan"))


def test_docstring_examples_run():
    result = doctest.testmod(discovery, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
