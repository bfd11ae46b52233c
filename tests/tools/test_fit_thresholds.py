"""tools/analysis/fit_thresholds.py on the toy config's val split."""

import torch
from lmclip_testing import REPO


def test_fit_thresholds_tool_writes_a_checkpoint_predict_uses(
        tmp_path, toy_root, capsys):
    from lmclip_tools.analysis import fit_thresholds
    from mmpretrain.registry import MODELS

    import lmclip_mm  # noqa: F401
    from lmclip_mm.datasets.toy_mlt import CLASSES
    torch.manual_seed(0)
    model = MODELS.build(dict(type='LMCLIPClassifier',
                              clip=dict(model_name='lmclip-tiny-rn')))
    model.set_classes(CLASSES)
    ckpt = _checkpoint_of(REPO / 'configs' / 'lmclip_toy_mlt_tiny.py',
                          tmp_path / 'toy.pth')
    # its run trained on the val images: fitted only when asked, with a
    # warning
    out = fit_thresholds.main([
        str(REPO / 'configs' / 'lmclip_toy_mlt_tiny.py'), str(ckpt),
        '--split', 'val', '--work-dir', str(tmp_path / 'w'),
        '--allow-train-images', '--cfg-options',
        f'test_dataloader.dataset.data_root={toy_root}'])
    assert 'warning: fitting on images' in capsys.readouterr().out
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


def _checkpoint_of(config, path):
    """A toy checkpoint whose meta carries ``config`` as its run's config
    (as mmengine's CheckpointHook saves it)."""
    from mmengine.config import Config
    from mmpretrain.registry import MODELS

    import lmclip_mm  # noqa: F401
    from lmclip_mm.datasets.toy_mlt import CLASSES
    torch.manual_seed(0)
    model = MODELS.build(dict(type='LMCLIPClassifier',
                              clip=dict(model_name='lmclip-tiny-rn')))
    model.set_classes(CLASSES)
    torch.save(dict(state_dict=model.state_dict(), meta=dict(
        dataset_meta=dict(classes=list(CLASSES)),
        cfg=Config.fromfile(str(config)).pretty_text)), path)
    return path


def test_fitting_on_images_the_checkpoint_trained_on_is_refused(
        tmp_path, toy_root):
    """The quickstart's checkpoint trained on the whole train list, so its
    'val' images are training images: refused in one line (or fitted with
    a warning when asked), while an honest run's checkpoint is fitted."""
    from lmclip_testing import data_root_options, run_tool
    configs = REPO / 'configs'
    ckpt = _checkpoint_of(configs / 'lmclip_toy_mlt_tiny.py',
                          tmp_path / 'quick.pth')
    args = ['analysis/fit_thresholds.py', configs / 'lmclip_toy_mlt_tiny.py',
            ckpt, '--work-dir', tmp_path / 'w', '--cfg-options',
            *data_root_options(toy_root, loaders=('test_dataloader', ))]
    proc = run_tool(args, check=False)
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f'error: --split val: {ckpt} was trained on these images (its run '
        'trained on the whole train list (holdout_val is not set in its '
        'config), which includes the val images); thresholds fitted there '
        'look better than they are. Fit a checkpoint of an *_honest config '
        '(its val split is held out), or pass --allow-train-images')
    assert not (tmp_path / 'quick_thr.pth').exists()

    from lmclip_tools.analysis.fit_thresholds import trained_on_split
    from mmengine.config import Config
    honest = _checkpoint_of(configs / 'lmclip_toy_mlt_tiny_honest.py',
                            tmp_path / 'honest.pth')
    honest = torch.load(honest, weights_only=False)
    cfg = Config.fromfile(str(configs / 'lmclip_toy_mlt_tiny_honest.py'))
    assert trained_on_split(honest, cfg, 'val') is None
    cfg.test_dataloader.dataset.val_seed = 7
    assert 'another val split' in trained_on_split(honest, cfg, 'val')
    assert trained_on_split(honest, cfg, 'test') is None
    assert 'train split' in trained_on_split(honest, cfg, 'train')
