"""tools/analysis/fit_thresholds.py on the toy config's val split."""

import torch
from lmclip_testing import REPO


def test_fit_thresholds_tool_writes_a_checkpoint_predict_uses(tmp_path):
    from lmclip_tools.analysis import fit_thresholds
    from mmpretrain.registry import MODELS

    import lmclip_mm  # noqa: F401
    from lmclip_mm.datasets.toy_mlt import CLASSES
    torch.manual_seed(0)
    model = MODELS.build(dict(type='LMCLIPClassifier',
                              clip=dict(model_name='lmclip-tiny-rn')))
    model.set_classes(CLASSES)
    ckpt = tmp_path / 'toy.pth'
    torch.save(dict(state_dict=model.state_dict(),
                    meta=dict(dataset_meta=dict(classes=list(CLASSES)))),
               ckpt)
    out = fit_thresholds.main([
        str(REPO / 'configs' / 'lmclip_toy_mlt_tiny.py'), str(ckpt),
        '--split', 'val', '--work-dir', str(tmp_path / 'w'),
        '--cfg-options', f'test_dataloader.dataset.data_root='
        f'{REPO}/data/toy_mlt/'])
    # per-class F1 maximised on the split: the macro F1 cannot drop
    assert out['fitted']['f1'] >= out['default_rule']['f1'] - 1e-9
    saved = torch.load(out['out'], map_location='cpu', weights_only=False)
    assert torch.equal(saved['state_dict']['class_thresholds'],
                       out['thresholds'])
    assert saved['meta']['class_thresholds']['split'] == 'val'
    # the original weights are unchanged
    for k, v in model.state_dict().items():
        assert torch.equal(saved['state_dict'][k], v), k
    fresh = MODELS.build(dict(type='LMCLIPClassifier',
                              clip=dict(model_name='lmclip-tiny-rn')))
    from mmengine.runner import load_checkpoint
    load_checkpoint(fresh, out['out'], map_location='cpu')
    assert torch.equal(fresh.class_thresholds, out['thresholds'])
