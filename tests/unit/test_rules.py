"""Rule strategies: prices -> positions in {-1, 0, +1}.

Every rule is checked against an independent implementation written here
with pandas (`ffill`, `rolling`, `ewm`, `shift`) for the indicators and a
plain per-bar Python loop for the entry/exit state machine, on seeded random
walks with missing bars (not yet listed, halted). Causality: noise added
after a random bar t changes no position at or before t.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from alphaswarm_backtester.engine.rules import (
    RULE_STRATEGIES,
    RuleInputs,
    positions_from_events,
    rule_target_weights,
    rule_weights,
    validate_rule_params,
)
from alphaswarm_common.errors import DataError, InvalidArgument

pytestmark = pytest.mark.unit

ALL_RULES = sorted(RULE_STRATEGIES)


def _panel(seed: int, n_bars: int = 260, n_syms: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    close = 40.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, (n_bars, n_syms)), axis=0))
    spread = np.abs(rng.normal(0.0, 0.01, (n_bars, n_syms)))
    high = close * (1.0 + spread)
    low = close * (1.0 - spread)
    volume = rng.lognormal(10.0, 0.5, (n_bars, n_syms))
    volume[rng.random(volume.shape) < 0.02] = np.nan
    close[:17, 1] = np.nan  # lists late
    close[120:126, 2] = np.nan  # halted
    for arr in (high, low, volume):
        arr[np.isnan(close)] = np.nan
    return {"close": close, "high": high, "low": low, "volume": volume}


# ----------------------------------------------------------------------------- reference implementation


def _ref_machine(el, xl, es, xs, ok) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Per-bar loop: conflicting events cancel, an entry sets its side, an exit closes its side."""
    n_bars, n_syms = el.shape
    out = np.zeros((n_bars, n_syms), dtype=np.int8)
    for j in range(n_syms):
        pos = 0
        for t in range(n_bars):
            if ok[t, j]:
                a, b, c, d = bool(el[t, j]), bool(xl[t, j]), bool(es[t, j]), bool(xs[t, j])
                if a and c:
                    a = c = False
                if a and b:
                    a = b = False
                if c and d:
                    c = d = False
                if a:
                    pos = 1
                elif c:
                    pos = -1
                elif (b and pos == 1) or (d and pos == -1):
                    pos = 0
            out[t, j] = pos
    return out


def _ref_rsi(x: pd.Series, n: int) -> pd.Series:
    """Wilder's RSI by a loop: simple-mean seed of the first n changes, then (avg (n-1) + v) / n."""
    out = pd.Series(np.nan, index=x.index)
    vals = x.to_numpy()
    first = int(np.flatnonzero(~np.isnan(vals))[0]) if (~np.isnan(vals)).any() else len(vals)
    if first + n >= len(vals):
        return out
    ag = al = 0.0
    for t in range(first + 1, len(vals)):
        d = vals[t] - vals[t - 1]
        g, loss = max(d, 0.0), max(-d, 0.0)
        k = t - first
        if k < n:
            ag += g
            al += loss
            continue
        if k == n:
            ag = (ag + g) / n
            al = (al + loss) / n
        else:
            ag = (ag * (n - 1) + g) / n
            al = (al * (n - 1) + loss) / n
        out.iloc[t] = 50.0 if ag + al == 0 else 100.0 - 100.0 / (1.0 + ag / al) if al > 0 else 100.0
    return out


def _reference(name: str, p: dict, data: dict[str, np.ndarray]) -> np.ndarray:  # type: ignore[type-arg]
    close = pd.DataFrame(data["close"])
    ok = close.notna().to_numpy()
    x = close.ffill()
    short = bool(p.get("allow_short", False))
    false = np.zeros(x.shape, dtype=bool)

    def cross(a: pd.DataFrame, b: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        up = (a > b) & (a.shift(1) <= b.shift(1))
        down = (a < b) & (a.shift(1) >= b.shift(1))
        return up.to_numpy(), down.to_numpy()

    def ema(frame: pd.DataFrame, span: int) -> pd.DataFrame:
        return frame.ewm(span=span, adjust=False, min_periods=span).mean()

    if name in ("sma_cross", "ema_cross"):
        if name == "sma_cross":
            fast, slow = x.rolling(p["fast_period"]).mean(), x.rolling(p["slow_period"]).mean()
        else:
            fast, slow = ema(x, p["fast_period"]), ema(x, p["slow_period"])
        up, down = cross(fast, slow)
        el, xl, es, xs = up, down, down, up
    elif name == "macd":
        line = ema(x, p["fast_period"]) - ema(x, p["slow_period"])
        up, down = cross(line, ema(line, p["signal_period"]))
        el, xl, es, xs = up, down, down, up
    elif name == "rsi":
        r = pd.concat([_ref_rsi(x[c], p["period"]) for c in x], axis=1).to_numpy()
        el, xl = r < p["lower"], r > p["upper"]
        es, xs = xl, el
    elif name == "bollinger":
        mid = x.rolling(p["period"]).mean()
        sd = x.rolling(p["period"]).apply(lambda w: np.std(w), raw=True)
        band = p["num_std"] * sd
        el, xl = (x < mid - band).to_numpy(), (x >= mid).to_numpy()
        es, xs = (x > mid + band).to_numpy(), (x <= mid).to_numpy()
    elif name in ("momentum", "volume_momentum"):
        m = (x / x.shift(p["lookback"]) - 1.0).to_numpy()
        el, xl, es, xs = m > p["threshold"], m <= 0, m < -p["threshold"], m >= 0
        if name == "volume_momentum":
            v = pd.DataFrame(data["volume"])
            base = v.shift(1).rolling(p["volume_period"]).mean().to_numpy()
            surge = v.to_numpy() > p["volume_multiplier"] * base
            el, es = el & surge, es & surge
    elif name == "mean_reversion":
        d = (x / x.rolling(p["ma_period"]).mean() - 1.0).to_numpy()
        e, q = p["entry_threshold"], p["exit_threshold"]
        el, xl, es, xs = d < -e, d >= -q, d > e, d <= q
    elif name == "breakout":
        hi = pd.DataFrame(np.where(np.isnan(data["high"]), x, data["high"]))
        lo = pd.DataFrame(np.where(np.isnan(data["low"]), x, data["low"]))
        hi_in = hi.shift(1).rolling(p["entry_period"]).max().to_numpy()
        lo_in = lo.shift(1).rolling(p["entry_period"]).min().to_numpy()
        hi_out = hi.shift(1).rolling(p["exit_period"]).max().to_numpy()
        lo_out = lo.shift(1).rolling(p["exit_period"]).min().to_numpy()
        xv = x.to_numpy()
        el, xl, es, xs = xv > hi_in, xv < lo_out, xv < lo_in, xv > hi_out
    elif name == "buy_and_hold":
        first = close.notna().cummax().to_numpy()
        return first.astype(np.int8)
    else:  # pragma: no cover
        raise AssertionError(name)
    if not short:
        es = xs = false
    return _ref_machine(el, xl, es, xs, ok)


CASES = [
    ("sma_cross", {"fast_period": 5, "slow_period": 17}),
    ("sma_cross", {"fast_period": 1, "slow_period": 2}),
    ("ema_cross", {"fast_period": 4, "slow_period": 13}),
    ("macd", {"fast_period": 5, "slow_period": 11, "signal_period": 4}),
    ("rsi", {"period": 6, "lower": 35, "upper": 65}),
    ("bollinger", {"period": 12, "num_std": 1.2}),
    ("momentum", {"lookback": 7, "threshold": 0.03}),
    ("mean_reversion", {"ma_period": 9, "entry_threshold": 0.025, "exit_threshold": 0.005}),
    ("breakout", {"entry_period": 9, "exit_period": 4}),
    ("breakout", {"entry_period": 2, "exit_period": 1}),
    ("volume_momentum", {"lookback": 6, "volume_period": 5, "threshold": 0.02, "volume_multiplier": 1.2}),
    ("buy_and_hold", {}),
]


@pytest.mark.parametrize(
    ("name", "params", "allow_short"),
    [(n, p, s) for n, p in CASES for s in (False, True) if not (n == "buy_and_hold" and s)],
)
def test_rule_matches_independent_implementation(name, params, allow_short):
    p = {**params, "allow_short": allow_short} if name != "buy_and_hold" else {}
    for seed in range(3):
        data = _panel(seed)
        got = rule_weights(name, p, **data)
        expected = _reference(name, p, data)
        assert got.dtype == np.float64 and got.shape == data["close"].shape
        mismatch = np.argwhere(got != expected)
        assert mismatch.size == 0, f"{name} seed {seed}: first mismatch at {mismatch[:3].tolist()}"
        assert set(np.unique(got)) <= ({-1.0, 0.0, 1.0} if allow_short else {0.0, 1.0})


def test_every_rule_trades_on_random_data_and_defaults_validate():
    data = _panel(7, n_bars=400)
    for name in ALL_RULES:
        params = validate_rule_params(name, {})
        w = rule_weights(name, params, **data)
        assert (w != 0).any(), name
        assert (np.diff(w, axis=0) != 0).any(), name


def test_wilder_rsi_indicator_matches_the_loop():
    data = _panel(11)
    inputs = RuleInputs(data["close"])
    x = pd.DataFrame(data["close"]).ffill()
    for n in (1, 2, 14):
        ref = pd.concat([_ref_rsi(x[c], n) for c in x], axis=1).to_numpy()
        got = inputs.rsi(n)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        np.testing.assert_allclose(got, ref, rtol=1e-11, atol=1e-9)


@pytest.mark.parametrize("name", ALL_RULES)
def test_causality_noise_after_t_changes_nothing_at_or_before_t(name):
    data = _panel(3, n_bars=220)
    params = {"allow_short": True} if name != "buy_and_hold" else {}
    base = rule_weights(name, params, **data)
    rng = np.random.default_rng(5)
    for t in rng.integers(20, 210, size=4):
        noisy = {k: v.copy() for k, v in data.items()}
        for key, arr in noisy.items():
            scale = rng.lognormal(0.0, 0.3, arr[t + 1 :].shape)
            arr[t + 1 :] *= scale
            if key != "volume":
                arr[t + 1 :][rng.random(arr[t + 1 :].shape) < 0.1] = np.nan
        noisy["high"] = np.fmax(noisy["high"], noisy["close"])
        noisy["low"] = np.fmin(noisy["low"], noisy["close"])
        w = rule_weights(name, params, **noisy)
        np.testing.assert_array_equal(w[: t + 1], base[: t + 1])
        assert not np.array_equal(w, base) or name == "buy_and_hold"


def test_state_machine_semantics():
    el = np.array([0, 1, 0, 0, 1, 1, 0, 0, 0, 0], dtype=bool)[:, None]
    xl = np.array([1, 0, 0, 1, 0, 1, 0, 0, 1, 0], dtype=bool)[:, None]
    es = np.array([0, 0, 0, 0, 0, 0, 1, 0, 0, 1], dtype=bool)[:, None]
    xs = np.array([0, 0, 0, 0, 0, 0, 0, 1, 0, 1], dtype=bool)[:, None]
    got = positions_from_events(el, xl, es, xs)[:, 0].tolist()
    # bar 0: exit with nothing open; 1: long; 3: exit; 4: long; 5: entry+exit conflict (held);
    # 6: flip short; 7: cover; 8: long exit while flat; 9: short entry+exit conflict (held flat).
    assert got == [0, 1, 1, 0, 1, 1, -1, 0, 0, 0]


def test_no_signal_gives_zero_weights_never_another_strategy():
    close = np.full((80, 2), 25.0)  # flat prices: no cross, no breakout, no momentum
    for name in ("sma_cross", "ema_cross", "macd", "momentum", "breakout", "bollinger", "mean_reversion"):
        w = rule_weights(name, {"allow_short": True}, close=close)
        assert not w.any(), name
    assert rule_weights("buy_and_hold", close=close).all()


def test_target_weights_split_capital_equally():
    data = _panel(2)
    w = rule_weights("sma_cross", {"allow_short": True}, close=data["close"])
    tw = rule_target_weights("sma_cross", {"allow_short": True}, close=data["close"])
    np.testing.assert_array_equal(tw, w / 3)
    assert np.abs(tw).sum(axis=1).max() <= 1.0 + 1e-15
    one = rule_weights("sma_cross", None, close=data["close"][:, 0])
    assert one.shape == (data["close"].shape[0], 1)


@pytest.mark.parametrize(
    ("name", "params", "field"),
    [
        ("nope", {}, "strategy_cfg.type"),
        ("sma_cross", {"fast_period": 20, "slow_period": 20}, "strategy_cfg.params.slow_period"),
        ("sma_cross", {"fast_period": 0}, "strategy_cfg.params.fast_period"),
        ("sma_cross", {"fast_period": 2.5}, "strategy_cfg.params.fast_period"),
        ("sma_cross", {"speed": 3}, "strategy_cfg.params.speed"),
        ("ema_cross", {"fast_period": 30}, "strategy_cfg.params.slow_period"),
        ("macd", {"fast_period": 26, "slow_period": 12}, "strategy_cfg.params.slow_period"),
        ("rsi", {"lower": 70, "upper": 30}, "strategy_cfg.params.upper"),
        ("rsi", {"lower": 0}, "strategy_cfg.params.lower"),
        ("rsi", {"upper": 100}, "strategy_cfg.params.upper"),
        ("bollinger", {"num_std": -1}, "strategy_cfg.params.num_std"),
        ("bollinger", {"period": 1}, "strategy_cfg.params.period"),
        ("mean_reversion", {"exit_threshold": 0.05}, "strategy_cfg.params.exit_threshold"),
        ("momentum", {"threshold": math.nan}, "strategy_cfg.params.threshold"),
        ("breakout", {"entry_period": 0}, "strategy_cfg.params.entry_period"),
        ("buy_and_hold", {"allow_short": True}, "strategy_cfg.params.allow_short"),
    ],
)
def test_invalid_params_name_the_field(name, params, field):
    with pytest.raises(InvalidArgument) as info:
        validate_rule_params(name, params)
    assert info.value.field == field
    with pytest.raises(InvalidArgument) as info:
        rule_weights(name, params, close=np.full((30, 1), 10.0))
    assert info.value.field == field


def test_json_numbers_are_accepted_and_defaults_are_documented():
    p = validate_rule_params("sma_cross", {"fast_period": 5.0, "slow_period": 30.0})
    assert (p.fast_period, p.slow_period) == (5, 30)  # type: ignore[attr-defined]
    defaults = {name: model().model_dump() for name, model in RULE_STRATEGIES.items()}
    assert defaults["sma_cross"] == {"allow_short": False, "fast_period": 10, "slow_period": 20}
    assert defaults["ema_cross"]["fast_period"] == 12 and defaults["ema_cross"]["slow_period"] == 26
    assert defaults["rsi"] == {"allow_short": False, "period": 14, "lower": 30.0, "upper": 70.0}
    assert defaults["macd"] == {
        "allow_short": False,
        "fast_period": 12,
        "slow_period": 26,
        "signal_period": 9,
    }
    assert defaults["bollinger"] == {"allow_short": False, "period": 20, "num_std": 2.0}
    assert defaults["momentum"] == {"allow_short": False, "lookback": 20, "threshold": 0.05}
    assert defaults["mean_reversion"]["entry_threshold"] == 0.02
    assert defaults["breakout"] == {"allow_short": False, "entry_period": 20, "exit_period": 10}
    assert defaults["volume_momentum"]["volume_multiplier"] == 1.5
    assert defaults["buy_and_hold"] == {}
    for model in RULE_STRATEGIES.values():
        assert model.description


def test_volume_momentum_without_volume_names_the_strategy_type():
    with pytest.raises(InvalidArgument) as info:
        rule_weights("volume_momentum", {}, close=np.full((40, 1), 10.0))
    assert info.value.field == "strategy_cfg.type"
    assert "volume" in info.value.message


def test_bad_prices_are_data_errors():
    with pytest.raises(DataError) as info:
        rule_weights("sma_cross", {}, close=np.array([[1.0], [-1.0]]))
    assert info.value.field == "close"
    with pytest.raises(DataError) as info:
        rule_weights("sma_cross", {}, close=np.ones((5, 2)), volume=np.ones((5, 3)))
    assert info.value.field == "volume"
