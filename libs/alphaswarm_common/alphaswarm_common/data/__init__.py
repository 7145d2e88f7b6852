"""Market data: the `Panel` type, loaders for shipped, generated and user data, segment checks.

`load_panel(cfg)` is the entry point: it reads `DatasetConfig.source` (a
shipped dataset name such as `sp500`, `synthetic` for a generated panel with
a planted alpha, or a CSV / Parquet path inside a data root, see `sources`), validates it, applies `symbols`,
`start_date`, `end_date` and the missing-data policy `missing`, and returns
an immutable `Panel`. `validate_segments(panel, cfg)` checks the train /
valid / test ranges against it; `synthetic_truth(cfg)` gives the planted
signal of a synthetic panel. See `panel`, `loaders` and `synthetic` for the
conventions.

NOTICE: the shipped `sp500_dataset.csv.gz` (adjusted daily closes of 20
S&P 500 stocks, 1990-01-02..2022-12-28) comes from skfolio's datasets,
Copyright (c) 2023-2026 The skfolio developers, distributed under the
BSD-3-Clause license reproduced in `LICENSE-skfolio-sp500.txt` next to it.
"""

from alphaswarm_common.data.loaders import (
    DEFAULT_MIN_SEGMENT_DATES,
    SHIPPED_DATASETS,
    SYNTHETIC_SOURCE,
    ShippedDataset,
    check_dataset_source,
    clear_cache,
    load_panel,
    panel_from_frame,
    read_panel,
    synthetic_truth,
    validate_segments,
)
from alphaswarm_common.data.panel import FIELDS, PRICE_FIELDS, Panel
from alphaswarm_common.data.sources import configure_data_roots, data_roots
from alphaswarm_common.data.synthetic import SyntheticTruth, generate_synthetic

__all__ = [
    "DEFAULT_MIN_SEGMENT_DATES",
    "FIELDS",
    "PRICE_FIELDS",
    "SHIPPED_DATASETS",
    "SYNTHETIC_SOURCE",
    "Panel",
    "ShippedDataset",
    "SyntheticTruth",
    "check_dataset_source",
    "clear_cache",
    "configure_data_roots",
    "data_roots",
    "generate_synthetic",
    "load_panel",
    "panel_from_frame",
    "read_panel",
    "synthetic_truth",
    "validate_segments",
]
