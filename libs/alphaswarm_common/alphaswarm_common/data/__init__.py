"""Market data: the `Panel` type, loaders for shipped datasets and user files, segment checks.

`load_panel(cfg)` is the entry point: it reads `DatasetConfig.source` (a
shipped dataset name such as `sp500`, or a CSV / Parquet path), validates it,
applies `symbols`, `start_date` and `end_date`, and returns an immutable
`Panel`. `validate_segments(panel, cfg)` checks the train / valid / test
ranges against it. See `panel` and `loaders` for the conventions.

NOTICE: the shipped `sp500_dataset.csv.gz` (adjusted daily closes of 20
S&P 500 stocks, 1990-01-02..2022-12-28) comes from skfolio's datasets,
Copyright (c) 2023-2026 The skfolio developers, distributed under the
BSD-3-Clause license reproduced in `LICENSE-skfolio-sp500.txt` next to it.
"""

from alphaswarm_common.data.loaders import (
    DEFAULT_MIN_SEGMENT_DATES,
    SHIPPED_DATASETS,
    ShippedDataset,
    clear_cache,
    load_panel,
    panel_from_frame,
    read_panel,
    validate_segments,
)
from alphaswarm_common.data.panel import FIELDS, PRICE_FIELDS, Panel

__all__ = [
    "DEFAULT_MIN_SEGMENT_DATES",
    "FIELDS",
    "PRICE_FIELDS",
    "SHIPPED_DATASETS",
    "Panel",
    "ShippedDataset",
    "clear_cache",
    "load_panel",
    "panel_from_frame",
    "read_panel",
    "validate_segments",
]
