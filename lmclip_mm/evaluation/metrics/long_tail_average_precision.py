# Copyright (c) lmclip_mm authors.
"""The long-tail mAP metric (``long-tail/`` keys); the computation, its
conventions (classes without positives, image subsets, tied scores) and
:func:`long_tail_average_precision` are in :mod:`lmclip_mm.evaluation.
long_tail_ap`."""
import warnings
from typing import Dict, List, Optional, Sequence, Union

import torch
from mmengine.logging import print_log
from mmpretrain.evaluation.metrics import AveragePrecision
from mmpretrain.registry import METRICS

from ..long_tail_ap import (  # noqa: F401  (importable from here too)
    GROUPS, NO_POSITIVE_RULES, UndefinedMetricWarning,
    long_tail_average_precision, roc_auc_per_class)


@METRICS.register_module()
class LongTailAveragePrecision(AveragePrecision):
    """mAP, head / middle / tail mAP and macro AUROC for long-tailed
    multi-label classification (LM-CLIP).

    A subclass of mmpretrain's :class:`AveragePrecision` (same ``process``,
    same per-class AP code, and by default the same ``mAP`` for the same
    scores). Reported keys, with the default prefix ``long-tail`` (its own,
    so that it can sit in one evaluator with mmpretrain's
    ``AveragePrecision``/``VOCAveragePrecision``, whose prefix is
    ``multi-label``)::

        long-tail/mAP
        long-tail/mAP_head          (when the head group is known)
        long-tail/mAP_middle        (when the middle group is known)
        long-tail/mAP_tail          (when the tail group is known)
        long-tail/AUROC
        long-tail/mAP_single_label  (images with one positive; subsets=True)
        long-tail/mAP_multi_label   (images with several; subsets=True)
        long-tail/AP_classwise      (a list of C floats; classwise=True only)

    e.g. ``default_hooks = dict(checkpoint=dict(save_best=['long-tail/mAP',
    'long-tail/mAP_tail'], rule='greater'))``.

    The class groups (lists of class indices, or class names if the
    dataset's ``metainfo`` has ``classes``) are taken from the arguments when
    given, otherwise from ``dataset_meta`` (``head_classes``,
    ``middle_classes``, ``tail_classes``; mmengine's loops set
    ``metric.dataset_meta = dataset.metainfo``). A group found in neither
    gets no key (warned once). See the module docstring for classes with no
    positive (AP 0 by default, as mmpretrain; warned) and for tied scores.

    Args:
        apply_softmax (bool): softmax each image's scores over the classes
            before computing AP / AUROC (the LM-CLIP paper's protocol).
            Defaults to False.
        classwise (bool): also report ``AP_classwise``. Defaults to False.
        no_positive (str): a class without a positive sample counts with
            AP ``'zero'`` (default, as mmpretrain's ``AveragePrecision`` and
            the paper's code) or is ``'exclude'``-d from the means.
        subsets (bool): also report ``mAP_single_label`` and
            ``mAP_multi_label`` (the paper's ``test.py``). Defaults to True.
        head_classes, middle_classes, tail_classes (Sequence[int | str],
            optional): override the groups of ``dataset_meta``.
        show_table (bool): log a table of mAP (all / head / middle / tail)
            and AUROC after each evaluation. Defaults to True.
        collect_device (str): 'cpu' or 'gpu'. Defaults to 'cpu'.
        prefix (str, optional): defaults to ``'long-tail'``.
    """
    default_prefix: Optional[str] = 'long-tail'

    def __init__(self,
                 apply_softmax: bool = False,
                 classwise: bool = False,
                 head_classes: Optional[Sequence[Union[int, str]]] = None,
                 middle_classes: Optional[Sequence[Union[int, str]]] = None,
                 tail_classes: Optional[Sequence[Union[int, str]]] = None,
                 show_table: bool = True,
                 no_positive: str = 'zero',
                 subsets: bool = True,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(
            average='macro', collect_device=collect_device, prefix=prefix)
        if no_positive not in NO_POSITIVE_RULES:
            raise ValueError(f'no_positive must be one of '
                             f'{NO_POSITIVE_RULES}, got {no_positive!r}')
        self.no_positive = no_positive
        self.subsets = subsets
        self.apply_softmax = apply_softmax
        self.show_table = show_table
        self.classwise = classwise
        self._groups_arg = dict(
            head=head_classes, middle=middle_classes, tail=tail_classes)
        self._warned_missing_groups = False

    def _class_names(self) -> Optional[List[str]]:
        meta = self.dataset_meta or {}
        names = meta.get('classes')
        return list(names) if names is not None else None

    def _resolve_groups(self) -> Dict[str, Optional[List[int]]]:
        meta = self.dataset_meta or {}
        class_names = self._class_names()
        groups = {}
        for name in GROUPS:
            group = self._groups_arg[name]
            if group is None:
                group = meta.get(f'{name}_classes')
            if group is not None:
                indices = []
                for c in group:
                    if isinstance(c, str):
                        if class_names is None or c not in class_names:
                            raise ValueError(
                                f'Unknown class name {c!r} in '
                                f'`{name}_classes`.')
                        indices.append(class_names.index(c))
                    else:
                        indices.append(int(c))
                group = indices
            groups[name] = group
        missing = [n for n, g in groups.items() if g is None]
        if missing and not self._warned_missing_groups:
            self._warned_missing_groups = True
            warnings.warn(
                f'{type(self).__name__}: no class indices for the group(s) '
                f'{missing} (neither `<group>_classes` arguments nor '
                '`dataset_meta`); their mAP_<group> is not reported.',
                UserWarning,
                stacklevel=2)
        return groups

    def compute_metrics(self, results: List) -> Dict[str, object]:
        """Compute the metrics from the processed (collected) results."""
        target = torch.stack([res['gt_score'] for res in results]).cpu()
        pred = torch.stack([res['pred_score'] for res in results]).cpu()
        groups = self._resolve_groups()
        metrics = long_tail_average_precision(
            pred,
            target,
            head_classes=groups['head'],
            middle_classes=groups['middle'],
            tail_classes=groups['tail'],
            apply_softmax=self.apply_softmax,
            classwise=self.classwise,
            class_names=self._class_names(),
            no_positive=self.no_positive,
            subsets=self.subsets)
        if self.show_table:
            print_log(
                '\n' + format_summary_table(metrics, groups, pred.shape[1],
                                            len(results)),
                logger='current')
        return metrics


_TABLE_ROWS = (('mAP', 'all'), ('mAP_head', 'head'),
               ('mAP_middle', 'middle'), ('mAP_tail', 'tail'),
               ('AUROC', 'AUROC (macro)'),
               ('mAP_single_label', 'single-label images'),
               ('mAP_multi_label', 'multi-label images'))


def format_summary_table(metrics: Dict[str, object],
                         groups: Dict[str, Optional[Sequence[int]]],
                         num_classes: int, num_images: int) -> str:
    """mAP of all classes and of every class group, and AUROC, as a table.

    Rows whose metric is absent (e.g. no group information) are left out.
    """
    rows = [('', 'classes', '%')]
    for key, name in _TABLE_ROWS:
        if key not in metrics:
            continue
        members = groups.get(name)
        count = len(members) if members is not None else num_classes
        rows.append((name, str(count), f'{float(metrics[key]):.2f}'))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    sep = '+' + '+'.join('-' * (w + 2) for w in widths) + '+'

    def line(row):
        cells = [row[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        return '| ' + ' | '.join(cells) + ' |'

    table = [sep, line(rows[0]), sep] + [line(r) for r in rows[1:]] + [sep]
    return (f'multi-label results on {num_images} images:\n' +
            '\n'.join(table))
