"""The README's reuse snippet is a working MMPretrain config."""
import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / 'README.md'


def _snippet():
    text = README.read_text(encoding='utf-8')
    blocks = re.findall(r'```python\n(.*?)```', text, flags=re.S)
    return next(b for b in blocks if 'LongTailMultiLabelDataset' in b)


def test_reuse_snippet_builds_and_runs(tmp_path):
    import lmclip_mm  # noqa: F401
    from lmclip_mm.datasets.toy_mlt import (LABELS_FILE, TEST_FILE,
                                            TRAIN_FILE, generate_toy_mlt)
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import (DATA_SAMPLERS, DATASETS, METRICS,
                                     MODELS)
    from mmpretrain.structures import DataSample

    root = tmp_path / 'my_lt'
    generate_toy_mlt(str(root), seed=0)
    code = _snippet()
    code = code.replace("'data/my_lt/'", repr(str(root)))
    code = code.replace("'my_labels.txt'", repr(LABELS_FILE))
    code = code.replace("'my_train.txt'", repr(TRAIN_FILE))
    code = code.replace("'my_test.txt'", repr(TEST_FILE))
    header = ("default_scope = 'mmpretrain'\n"
              "custom_imports = dict(imports=['lmclip_mm'])\n"
              "NUM_CLASSES = 20\n"
              "train_pipeline = [dict(type='LoadImageFromFile'), "
              "dict(type='PackInputs')]\n"
              "test_pipeline = train_pipeline\n")
    cfg_file = tmp_path / 'snippet_cfg.py'
    cfg_file.write_text(header + code)
    cfg = Config.fromfile(str(cfg_file))
    init_default_scope('mmpretrain')

    train = DATASETS.build(cfg.train_dataloader.dataset)
    test = DATASETS.build(cfg.val_dataloader.dataset)
    assert len(train) == 804 and len(test) == 345
    assert len(train.metainfo['tail_classes']) == 8
    sampler = DATA_SAMPLERS.build(
        cfg.train_dataloader.sampler, default_args=dict(dataset=train))
    assert len(list(iter(sampler))) == len(train)
    metric = METRICS.build(cfg.val_evaluator)
    metric.dataset_meta = test.metainfo

    model = MODELS.build(cfg.model)
    batch = [train[i] for i in range(2)]
    data = model.data_preprocessor(
        dict(inputs=[b['inputs'] for b in batch],
             data_samples=[b['data_samples'] for b in batch]), True)
    losses = model(**data, mode='loss')
    assert torch.isfinite(losses['loss']) and losses['loss'] > 0
    model.eval()
    with torch.no_grad():
        preds = model.val_step(dict(
            inputs=[test[i]['inputs'] for i in range(2)],
            data_samples=[test[i]['data_samples'] for i in range(2)]))
    metric.process([], [p.to_dict() if isinstance(p, DataSample) else p
                        for p in preds])
    result = metric.compute_metrics(metric.results)
    assert 'mAP_tail' in result
