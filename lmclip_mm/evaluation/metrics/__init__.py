# Copyright (c) lmclip_mm authors.
from .long_tail_average_precision import (LongTailAveragePrecision,
                                          UndefinedMetricWarning,
                                          long_tail_average_precision,
                                          roc_auc_per_class)
from .pred_label_metric import PredLabelMultiLabelMetric

__all__ = [
    'LongTailAveragePrecision', 'UndefinedMetricWarning',
    'long_tail_average_precision', 'roc_auc_per_class',
    'PredLabelMultiLabelMetric'
]
