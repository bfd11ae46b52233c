"""The README's reuse snippets: the LM-CLIP one is the example config
``configs/examples/lmclip_own_list_files.py`` (same settings) and works as
an MMPretrain config (datasets, sampler, metrics, model: a loss step and an
evaluation on generated data with a tiny CLIP)."""
import re
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
README = REPO / 'README.md'
EXAMPLE = REPO / 'configs' / 'examples' / 'lmclip_own_list_files.py'
HEADER = ("default_scope = 'mmpretrain'\n"
          "custom_imports = dict(imports=['lmclip_mm'])\n")
#: settings the README's snippet (a) shows
KEYS = ('train_dataloader', 'val_dataloader', 'test_dataloader',
        'val_evaluator', 'test_evaluator', 'model', 'optim_wrapper',
        'param_scheduler', 'train_cfg', 'val_cfg', 'test_cfg',
        'custom_hooks')


def _snippet():
    text = README.read_text(encoding='utf-8')
    blocks = re.findall(r'```python\n(.*?)```', text, flags=re.S)
    return next(b for b in blocks
                if "type='LMCLIPClassifier'" in b and 'dataset = ' in b)


def _config(tmp_path, code, name):
    from mmengine.config import Config
    path = tmp_path / name
    path.write_text(HEADER + code)
    return Config.fromfile(str(path))


def test_snippet_is_the_example_config(tmp_path):
    from mmengine.config import Config
    snippet = _config(tmp_path, _snippet(), 'snippet.py')
    example = Config.fromfile(str(EXAMPLE))
    for key in KEYS:
        assert snippet[key] == example[key], key
    # the example inherits mmpretrain's runtime (which adds a _scope_)
    example_ckpt = {k: v for k, v in example.default_hooks.checkpoint.items()
                    if k != '_scope_'}
    assert snippet.default_hooks.checkpoint == example_ckpt


def test_snippet_builds_and_runs(tmp_path):
    import lmclip_mm  # noqa: F401
    from lmclip_mm.datasets.toy_mlt import (LABELS_FILE, TEST_FILE,
                                            TRAIN_FILE, generate_toy_mlt)
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import (DATA_SAMPLERS, DATASETS, METRICS,
                                     MODELS)

    root = tmp_path / 'my_lt'
    generate_toy_mlt(str(root), seed=0)
    code = _snippet()
    for old, new in (("'data/my_lt/'", repr(str(root))),
                     ("'labels.txt'", repr(LABELS_FILE)),
                     ("'train.txt'", repr(TRAIN_FILE)),
                     ("'test.txt'", repr(TEST_FILE)),
                     # a tiny random CLIP on the 64 px toy images
                     ("model_name='ViT-B-16', pretrained='openai'",
                      "model_name='lmclip-tiny-rn', pretrained=None"),
                     ('scale=(224, 224)', 'scale=(64, 64)')):
        assert old in code, old
        code = code.replace(old, new)
    cfg = _config(tmp_path, code, 'snippet_run.py')
    init_default_scope('mmpretrain')

    train = DATASETS.build(cfg.train_dataloader.dataset)
    test = DATASETS.build(cfg.val_dataloader.dataset)
    assert len(train) == 804 and len(test) == 345
    assert len(train.metainfo['tail_classes']) == 8
    sampler = DATA_SAMPLERS.build(
        cfg.train_dataloader.sampler, default_args=dict(dataset=train))
    assert len(list(iter(sampler))) == len(train)
    metrics = [METRICS.build(m) for m in cfg.val_evaluator]
    for metric in metrics:
        metric.dataset_meta = test.metainfo

    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.set_dataset_meta(train.metainfo)  # what DatasetMetaHook does
    batch = [train[i] for i in range(2)]
    data = model.data_preprocessor(
        dict(inputs=[b['inputs'] for b in batch],
             data_samples=[b['data_samples'] for b in batch]), True)
    losses = model(**data, mode='loss')
    assert torch.isfinite(losses['loss_bal'])
    assert torch.isfinite(losses['loss_contrastive'])
    model.eval()
    with torch.no_grad():
        preds = model.val_step(dict(
            inputs=[test[i]['inputs'] for i in range(4)],
            data_samples=[test[i]['data_samples'] for i in range(4)]))
    results = {}
    for metric in metrics:
        metric.process([], [p.to_dict() for p in preds])
        results.update(metric.compute_metrics(metric.results))
    assert 'mAP_tail' in results
    assert any('f1' in k for k in results), results
