"""Training draws (agents.learning.tariffs): multipliers with mass near 0, tariffs not tied to
the hour."""

from __future__ import annotations

import numpy as np
import pytest

from agents.learning.env import BuildingEnv
from agents.learning.recipe import RecipeError, load_recipe
from agents.learning.tariffs import MultiplierDraw, TariffDraw

DRAWS = 20_000
SHARE_ATOL = 0.015  # sampling error of a share over DRAWS draws (about 4 standard errors)
QUANTILE_RTOL = 0.05


def _sample(draw: MultiplierDraw, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.array([draw.draw(rng) for _ in range(DRAWS)])


def test_default_draw_is_uniform_over_the_range():
    x = _sample(MultiplierDraw(-20.0, 20.0))
    assert x.min() >= -20.0 and x.max() <= 20.0
    assert np.quantile(x, [0.25, 0.5, 0.75]) == pytest.approx([-10.0, 0.0, 10.0], abs=0.6)


def test_zero_share_and_power_put_mass_near_zero():
    x = _sample(MultiplierDraw(0.0, 15.0, zero_share=0.3, power=2.0))
    assert (x == 0.0).mean() == pytest.approx(0.3, abs=SHARE_ATOL)
    nonzero = x[x > 0]
    # P(15 u^2 <= q) = sqrt(q / 15): the median of the non-zero draws is 15 / 4
    assert np.median(nonzero) == pytest.approx(15.0 / 4.0, rel=QUANTILE_RTOL)
    assert nonzero.max() <= 15.0


def test_negative_share_of_a_signed_range():
    x = _sample(MultiplierDraw(-20.0, 20.0, zero_share=0.05, power=2.0, negative_share=0.1))
    assert (x == 0.0).mean() == pytest.approx(0.05, abs=SHARE_ATOL)
    assert (x < 0).mean() == pytest.approx(0.95 * 0.1, abs=SHARE_ATOL)
    assert x.min() >= -20.0 and x.max() <= 20.0
    assert np.median(x[x > 0]) == pytest.approx(5.0, rel=QUANTILE_RTOL)


@pytest.mark.parametrize("kwargs", [dict(zero_share=1.5), dict(power=0.5),
                                    dict(negative_share=-0.1)])
def test_bad_draw_parameters_are_refused(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        MultiplierDraw(0.0, 1.0, **kwargs)


def test_synthetic_tariffs_are_two_level_with_moving_peaks():
    draw = TariffDraw(synthetic_share=1.0)
    hours = np.arange(48) % 24
    rng = np.random.default_rng(1)
    peak_starts = set()
    for _ in range(200):
        price = draw.draw(rng, hours, np.full(48, 0.2))
        levels = np.unique(price)
        assert len(levels) == 2
        low, high = levels
        assert draw.offpeak[0] <= low <= draw.offpeak[1]
        assert draw.peak_extra[0] <= high - low <= draw.peak_extra[1]
        day = price[:24] == high
        assert draw.peak_hours[0] <= day.sum() <= draw.peak_hours[1]
        assert (price[24:] == price[:24]).all()  # the same tariff every day of the episode
        peak_starts.add(int(np.flatnonzero(day & ~np.roll(day, 1))[0]))
    # the peak is not tied to the hour of day
    assert len(peak_starts) >= 10


def test_data_tariff_is_scaled_as_a_whole():
    data_price = np.array([0.21, 0.21, 0.5, 0.54, 0.21])
    price = TariffDraw(data_scale=(0.7, 1.3)).draw(np.random.default_rng(2), np.arange(5),
                                                    data_price)
    ratio = price / data_price
    assert np.allclose(ratio, ratio[0], rtol=1e-12) and 0.7 <= ratio[0] <= 1.3


def test_env_uses_the_draws_and_stays_deterministic():
    env = BuildingEnv(episode_steps=24, tariff=TariffDraw(synthetic_share=1.0),
                      lambda_draw=MultiplierDraw(0.0, 15.0, zero_share=1.0))
    prices = []
    for seed in (0, 0, 1):
        _, info = env.reset(seed=seed)
        assert info["lambda"] == 0.0
        _, _, _, _, step = env.step(np.array([1.0, 0.0], dtype=np.float32))
        price = env._loop.setup.price_per_kwh
        assert step["cost"] == pytest.approx(price[0] * step["grid_kwh"], rel=1e-12)
        prices.append(price)
    assert np.array_equal(prices[0], prices[1])
    assert len(np.unique(prices[2])) == 2
    assert not set(np.round(prices[2], 6)) <= set(np.round(env.data.price_per_kwh, 6))


def test_env_refuses_a_draw_outside_the_scaled_range():
    with pytest.raises(ValueError, match="lambda_draw"):
        BuildingEnv(lambda_range=(0.0, 15.0), lambda_draw=MultiplierDraw(0.0, 30.0))


def test_recipe_errors_name_the_draw_fields(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("classes: {normal: {demand_scale: 1.0}}\n"
                    "lambda_draw: {zero_share: 2}\ntariff: {offpeak: [0.3, 0.1]}\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert "lambda_draw.zero_share" in str(err.value)
    assert "tariff" in str(err.value) and "offpeak" in str(err.value)
