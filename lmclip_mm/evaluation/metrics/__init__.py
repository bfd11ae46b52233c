# Copyright (c) lmclip_mm authors.
from .long_tail_average_precision import (LongTailAveragePrecision,
                                          UndefinedMetricWarning,
                                          long_tail_average_precision,
                                          roc_auc_per_class)

__all__ = [
    'LongTailAveragePrecision', 'UndefinedMetricWarning',
    'long_tail_average_precision', 'roc_auc_per_class'
]
