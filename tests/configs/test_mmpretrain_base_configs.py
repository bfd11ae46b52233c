"""MMPretrain's own base configs (``mmpretrain::``) work with lmclip_mm."""
import textwrap

import pytest
from mmengine.config import Config


def test_config_inherits_mmpretrain_default_runtime(tmp_path):
    """mmengine 0.10.7 resolves ``mmpretrain::`` with pkg_resources
    (setuptools < 81 ships it: a runtime requirement)."""
    cfg_file = tmp_path / 'my_cfg.py'
    cfg_file.write_text(textwrap.dedent('''
        _base_ = ['mmpretrain::_base_/default_runtime.py',
                  'mmpretrain::_base_/schedules/imagenet_bs256.py']
        custom_imports = dict(imports=['lmclip_mm'],
                              allow_failed_imports=False)
        model = dict(type='ImageClassifier',
                     backbone=dict(type='ResNet', depth=18),
                     neck=dict(type='GlobalAveragePooling'),
                     head=dict(type='MultiLabelLinearClsHead', num_classes=4,
                               in_channels=512,
                               loss=dict(type='BalancedAsymmetricLoss')))
        val_evaluator = dict(type='LongTailAveragePrecision')
    '''))
    cfg = Config.fromfile(str(cfg_file))
    assert cfg.default_scope == 'mmpretrain'
    assert cfg.default_hooks.checkpoint.type == 'CheckpointHook'
    assert cfg.optim_wrapper.optimizer.type == 'SGD'
    from mmpretrain.registry import METRICS, MODELS
    model = MODELS.build(cfg.model)
    assert type(model.head.loss_module).__name__ == 'BalancedAsymmetricLoss'
    assert type(METRICS.build(cfg.val_evaluator)).__name__ == \
        'LongTailAveragePrecision'


def test_setuptools_requirement_provides_pkg_resources():
    import importlib.util
    assert importlib.util.find_spec('pkg_resources') is not None
    from pathlib import Path
    runtime = (Path(__file__).parents[2] / 'requirements' /
               'runtime.txt').read_text()
    assert 'setuptools>=60,<81' in runtime


if __name__ == '__main__':
    pytest.main([__file__])
