"""Benchmark: rule strategies and their optimization against vectorbt (and backtesting.py when installed).

    python benchmarks/bench_rules.py [--repeats 5] [--seed 0] [--single-bars 1000000] [--batch-bars 100000]

Cases, each engine run `--repeats` times in the same process one after the
other (same machine load), after one untimed warm-up (vectorbt compiles with
numba on its first call); the median wall time is reported, and the median
process CPU time (every thread), which a loaded machine moves least:

1. SMA cross (10, 20) on `--single-bars` bars of one symbol (a geometric
   random walk on minute bars, 98,280 bars a year):
   - ours: `run_rule_backtest("sma_cross", ...)`: the SMAs, the cross events,
     the positions, the account, the full trade ledger and every trading
     metric (periods_per_year given, as vectorbt is given `freq`);
   - vectorbt, signals given: `Portfolio.from_signals(close, entries, exits,
     fees=0.002, freq="1min")` followed by `.value()`, on the cross signals
     shifted one bar (our execution lag 1);
   - vectorbt, end to end: `MA.run` x 2, `ma_crossed_above/below`,
     `from_signals`, `.value()`, the trade records, `sharpe_ratio()` and
     `max_drawdown()`.
2. 100 (fast, slow) SMA pairs (fast 5..50 step 5, slow 60..240 step 20) on
   `--batch-bars` bars of one symbol:
   - ours: `optimize("sma_cross", grid=...)`: every pair's positions, the
     K-set kernel's metrics of every set (Sharpe, Sortino, Calmar, drawdown,
     trade statistics, ...), the ranking and the Deflated-Sharpe p-values;
   - vectorbt: `MA.run` with the 100 fast and the 100 slow windows, the cross
     signals, one `from_signals` over 100 columns, then `sharpe_ratio()`,
     `total_return()`, `max_drawdown()` and the trade counts.
3. backtesting.py (`Backtest(...).run()` of its SMA cross example) on the
   single-symbol case when the package is importable; it is not a dependency.
   Install it beside the project, not into it, and put it on the path of
   this run only:

       .venv/bin/uv pip install --target /tmp/btpy --no-deps --python .venv/bin/python \
           backtesting bokeh tornado xyzservices contourpy narwhals
       PYTHONPATH=/tmp/btpy .venv/bin/python benchmarks/bench_rules.py

The two engines do not account identically: vectorbt's `from_signals`
buys what the cash covers fees included and then holds a fixed number of
shares, ours targets a weight of 1 every bar (the cost of a fill is paid
from cash, and the small drift it causes is traded back), so a trade's
result differs by about the fee times the trade's return and the equity
curves drift apart slowly over tens of thousands of trades; the printout
shows the largest difference, and how closely the Sharpe ratios of the 100
pairs agree in rank. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

# backtesting.py's progress bar would be timed with it (tqdm reads this when first imported)
os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np
import pandas as pd

from alphaswarm_backtester.engine import EngineConfig, optimize, run_rule_backtest

FEES, SLIPPAGE = 0.001, 0.001
MINUTES_PER_YEAR = 252 * 390
FAST = list(range(5, 55, 5))
SLOW = list(range(60, 260, 20))


#: process CPU seconds (every thread) of the last `median_time`, by label: the figure a loaded machine
#: moves least (wall times there move 2-3x from run to run)
CPU: dict[str, float] = {}


def median_time(fn: Callable[[], Any], repeats: int, label: str = "") -> tuple[float, Any]:
    fn()  # warm-up: imports, numba compilation, allocator
    times, cpu, result = [], [], None
    for _ in range(repeats):
        result = None
        gc.collect()
        c0 = time.process_time()
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    if label:
        CPU[label] = float(np.median(cpu))
    return float(np.median(times)), result


def cpu_row(name: str, label: str, ours: str) -> str:
    """A table row of the median process CPU seconds of `label` and its ratio to `ours`."""
    ratio = f"{CPU[label] / CPU[ours]:.2f}x" if label != ours else ""
    return f"| {name} | {CPU[label]:.3f} | {ratio} |"


def prices(n_bars: int, seed: int) -> pd.Series:
    rng = np.random.default_rng(seed)
    close = 50.0 * np.exp(np.cumsum(rng.normal(0.00002, 0.002, n_bars)))
    return pd.Series(close, index=pd.date_range("1990-01-01", periods=n_bars, freq="min"))


def config() -> EngineConfig:
    return EngineConfig(fees=FEES, slippage=SLIPPAGE, execution_lag=1, periods_per_year=MINUTES_PER_YEAR)


def bench_single(n_bars: int, seed: int, repeats: int) -> None:
    import vectorbt as vbt

    close = prices(n_bars, seed)
    values, dates = close.to_numpy(), close.index

    def ours() -> Any:
        return run_rule_backtest(
            "sma_cross",
            {"fast_period": 10, "slow_period": 20},
            close=values,
            dates=dates,
            symbols=["X"],
            config=config(),
        )

    fast, slow = vbt.MA.run(close, 10), vbt.MA.run(close, 20)
    entries = fast.ma_crossed_above(slow).shift(1, fill_value=False)
    exits = fast.ma_crossed_below(slow).shift(1, fill_value=False)

    def vbt_signals() -> Any:
        pf = vbt.Portfolio.from_signals(close, entries, exits, fees=FEES + SLIPPAGE, freq="1min")
        return pf.value()

    def vbt_end_to_end() -> Any:
        f, s = vbt.MA.run(close, 10), vbt.MA.run(close, 20)
        pf = vbt.Portfolio.from_signals(
            close,
            f.ma_crossed_above(s).shift(1, fill_value=False),
            f.ma_crossed_below(s).shift(1, fill_value=False),
            fees=FEES + SLIPPAGE,
            freq="1min",
        )
        return pf.value(), pf.trades.records, pf.sharpe_ratio(), pf.max_drawdown()

    t_ours, out = median_time(ours, repeats, "single ours")
    t_sig, value = median_time(vbt_signals, repeats, "single vbt signals")
    t_e2e, _ = median_time(vbt_end_to_end, repeats, "single vbt e2e")
    diff = float(np.max(np.abs(out.equity / out.config.initial_capital - value.to_numpy() / 100.0)))
    print(f"\n## 1. SMA cross (10, 20), {n_bars:,} bars of one symbol\n")
    print("| engine | median (s) | vectorbt / ours |")
    print("|---|---|---|")
    print(f"| ours: run_rule_backtest (ledger + metrics) | {t_ours:.3f} | |")
    print(f"| vectorbt from_signals + value (signals given) | {t_sig:.3f} | {t_sig / t_ours:.2f}x |")
    print(
        f"| vectorbt MA + signals + from_signals + trades + sharpe + drawdown | {t_e2e:.3f} | {t_e2e / t_ours:.2f}x |"
    )
    print("\nProcess CPU seconds (median; every thread), the same runs:\n")
    print("| engine | CPU (s) | vectorbt / ours |\n|---|---|---|")
    print(cpu_row("ours: run_rule_backtest (ledger + metrics)", "single ours", "single ours"))
    print(cpu_row("vectorbt from_signals + value (signals given)", "single vbt signals", "single ours"))
    print(cpu_row("vectorbt MA + ... + drawdown", "single vbt e2e", "single ours"))
    print(
        f"\ntrades: ours {len(out.trades):,}; max |equity difference| / initial capital: {diff:.2e} "
        "(fixed shares vs daily target weight)"
    )
    bench_backtesting_py(close, t_ours, repeats)


def bench_backtesting_py(close: pd.Series, t_ours: float, repeats: int) -> None:
    try:
        from backtesting import Backtest, Strategy  # type: ignore[import-not-found]
        from backtesting.lib import crossover  # type: ignore[import-not-found]
    except ImportError:
        print("\nbacktesting.py: not installed (not a dependency of AlphaSwarm), not timed.")
        return

    def sma(values: Any, n: int) -> Any:
        return pd.Series(values).rolling(n).mean()

    class SmaCross(Strategy):  # type: ignore[misc]
        def init(self) -> None:
            self.fast = self.I(sma, self.data.Close, 10)
            self.slow = self.I(sma, self.data.Close, 20)

        def next(self) -> None:
            if crossover(self.fast, self.slow):
                self.buy()
            elif crossover(self.slow, self.fast):
                self.position.close()

    frame = pd.DataFrame({"Open": close, "High": close, "Low": close, "Close": close})

    def run() -> Any:
        with warnings.catch_warnings():  # it warns on every order its margin rejects
            warnings.simplefilter("ignore")
            return Backtest(frame, SmaCross, commission=FEES + SLIPPAGE).run()

    t, _ = median_time(run, max(1, repeats // 2), "single backtesting.py")
    print(
        f"\nbacktesting.py SmaCross (`Backtest(...).run()`): {t:.3f} s, {t / t_ours:.2f}x ours; "
        f"CPU {CPU['single backtesting.py']:.3f} s, {CPU['single backtesting.py'] / CPU['single ours']:.2f}x ours"
    )


def bench_batch(n_bars: int, seed: int, repeats: int) -> None:
    import vectorbt as vbt

    close = prices(n_bars, seed + 1)
    values, dates = close.to_numpy(), close.index
    grid = {"fast_period": FAST, "slow_period": SLOW}

    def ours() -> Any:
        return optimize("sma_cross", close=values, dates=dates, symbols=["X"], grid=grid, config=config())

    fast_w = [f for f in FAST for _ in SLOW]
    slow_w = [s for _ in FAST for s in SLOW]

    def vbt_batch() -> Any:
        f = vbt.MA.run(close, fast_w, short_name="fast")
        s = vbt.MA.run(close, slow_w, short_name="slow")
        entries = f.ma_crossed_above(s).shift(1, fill_value=False)
        exits = f.ma_crossed_below(s).shift(1, fill_value=False)
        pf = vbt.Portfolio.from_signals(close, entries, exits, fees=FEES + SLIPPAGE, freq="1min")
        return pf.sharpe_ratio(), pf.total_return(), pf.max_drawdown(), pf.trades.count()

    t_ours, res = median_time(ours, repeats, "batch ours")
    t_vbt, (sharpe, *_rest) = median_time(vbt_batch, repeats, "batch vbt")
    ours_sharpe = np.array([t.metrics["sharpe"] for t in res.trials], dtype=float)
    theirs = np.asarray(sharpe, dtype=float)
    rank_corr = pd.Series(ours_sharpe).corr(pd.Series(theirs), method="spearman")
    print(f"\n## 2. {len(res.trials)} (fast, slow) SMA pairs, {n_bars:,} bars of one symbol\n")
    print("| engine | median (s) | vectorbt / ours |")
    print("|---|---|---|")
    print(f"| ours: optimize (all metrics, ranking, DSR p-values; {res.evaluation}) | {t_ours:.3f} | |")
    print(
        f"| vectorbt MA + signals + from_signals (100 columns) + stats | {t_vbt:.3f} | {t_vbt / t_ours:.2f}x |"
    )
    print("\nProcess CPU seconds (median; every thread: ours runs the sets on every core), the same runs:\n")
    print("| engine | CPU (s) | vectorbt / ours |\n|---|---|---|")
    print(cpu_row("ours: optimize", "batch ours", "batch ours"))
    print(cpu_row("vectorbt MA + signals + from_signals (100 columns) + stats", "batch vbt", "batch ours"))
    print(
        f"\nSpearman correlation of the 100 Sharpe ratios, ours vs vectorbt: {rank_corr:.6f}; "
        f"best set: {res.best.params if res.best else None}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--single-bars", type=int, default=1_000_000)
    parser.add_argument("--batch-bars", type=int, default=100_000)
    args = parser.parse_args(argv)
    import vectorbt as vbt

    shown = argv if argv is not None else sys.argv[1:]
    print(f"# command: python benchmarks/bench_rules.py {' '.join(shown)}".rstrip())
    print(
        f"# python {platform.python_version()}, numpy {np.__version__}, pandas {pd.__version__}, "
        f"vectorbt {vbt.__version__}, {platform.machine()}, repeats={args.repeats} (median)"
    )
    bench_single(args.single_bars, args.seed, args.repeats)
    bench_batch(args.batch_bars, args.seed, args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
