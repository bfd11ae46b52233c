"""First-run errors of the tools: one ``error:`` line, exit status 1
(issue 15)."""
from pathlib import Path

import pytest
from lmclip_testing import data_root_options

REPO = Path(__file__).resolve().parents[2]
TOY = REPO / 'configs' / 'lmclip_toy_mlt_tiny.py'


def _error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith('error:')]


def test_type_typo_is_one_error_line_naming_key_and_closest_name(
        tool, tmp_path):
    proc = tool(['train.py', TOY, '--work-dir', tmp_path, '--cfg-options',
                 'model.type=LMCLIPClasifier'], check=False)
    assert proc.returncode == 1, proc.stderr
    assert 'Traceback' not in proc.stderr
    assert _error_lines(proc.stderr) == [
        "error: model: type 'LMCLIPClasifier' is not registered in "
        "mmpretrain::model; did you mean 'LMCLIPClassifier'?"]
    assert proc.stderr.rstrip().endswith(_error_lines(proc.stderr)[0])
    proc = tool(['train.py', TOY, '--work-dir', tmp_path, '--cfg-options',
                 'model.type=LMCLIPClasifier'], env={'LMCLIP_TRACEBACK': '1'},
                check=False)
    assert proc.returncode == 1 and 'Traceback' in proc.stderr
    assert 'KeyError' in proc.stderr


def _train_options(root):  # with --no-validate (no val_dataloader)
    return data_root_options(root, 'train_cfg.max_epochs=1',
                             loaders=('train_dataloader', 'test_dataloader'))


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory, tool):
    """A finished 1-epoch run of the toy config (toy set generated on first
    use)."""
    root = tmp_path_factory.mktemp('toy') / 'toy'
    work_dir = tmp_path_factory.mktemp('finished')
    tool(['train.py', TOY, '--work-dir', work_dir, '--no-validate',
          '--cfg-options', *_train_options(root)])
    return root, work_dir


def test_resume_of_a_finished_run_says_so(finished_run, tool):
    root, work_dir = finished_run
    proc = tool(['train.py', TOY, '--work-dir', work_dir, '--resume',
                 '--no-validate', '--cfg-options',
                 *_train_options(root)])
    assert proc.returncode == 0
    assert (f'The run in {work_dir} already finished (epoch 1 of 1): '
            f'nothing to resume. Its checkpoints, in {work_dir}: '
            'epoch_1.pth. To train again, use another --work-dir.'
            ) in proc.stdout, proc.stdout[-2000:]
    # an explicit checkpoint too
    proc = tool(['train.py', TOY, '--work-dir', work_dir, '--resume',
                 work_dir / 'epoch_1.pth', '--no-validate', '--cfg-options',
                 *_train_options(root)])
    assert 'already finished (epoch 1 of 1)' in proc.stdout


def test_checkpoint_runs_do_not_announce_a_random_init(finished_run, tool,
                                                        tmp_path):
    root, work_dir = finished_run
    ckpt = work_dir / 'epoch_1.pth'
    proc = tool(['test.py', TOY, ckpt, '--work-dir', tmp_path,
                 '--cfg-options', *data_root_options(root)])
    assert 'initialized randomly' not in proc.stdout + proc.stderr
    image = sorted((root / 'images' / 'test').glob('*.jpg'))[0]
    proc = tool(['infer.py', TOY, ckpt, image, '--cfg-options',
                 *data_root_options(root)])
    assert str(image) in proc.stdout
    assert 'initialized randomly' not in proc.stdout + proc.stderr


ZERO_SHOT_ERROR = (
    "error: zero-shot needs pretrained weights, but model.clip.pretrained is "
    "None (a random lmclip-tiny-rn): set --cfg-options "
    "model.clip.pretrained=openai (or the path of a weights file, e.g. "
    "ViT-B-16.pt), or evaluate a trained checkpoint instead")


def test_zero_shot_without_pretrained_weights_is_refused(tool, tmp_path):
    proc = tool(['test.py', TOY, '--zero-shot', '--work-dir', tmp_path],
                check=False)
    assert proc.returncode == 1
    assert _error_lines(proc.stderr) == [ZERO_SHOT_ERROR], proc.stderr
    assert 'Traceback' not in proc.stderr
    assert not list(tmp_path.rglob('*.json'))  # nothing evaluated
    # infer.py's zero-shot ("none" for CHECKPOINT) as well
    from PIL import Image
    image = tmp_path / 'photo.jpg'
    Image.new('RGB', (64, 64), 'red').save(image)
    proc = tool(['infer.py', TOY, 'none', image], check=False)
    assert proc.returncode == 1
    assert _error_lines(proc.stderr) == [ZERO_SHOT_ERROR], proc.stderr


def test_unreachable_hub_is_one_error_line(tool, tmp_path):
    """Offline, pretrained='openai' fails at once with what to do (no
    download retries, no chained tracebacks). The hub is "unreachable"
    through a proxy on a closed loopback port: no traffic leaves."""
    import socket
    with socket.socket() as s:  # a port nobody listens on
        s.bind(('127.0.0.1', 0))
        proxy = f'http://127.0.0.1:{s.getsockname()[1]}'
    env = {var: proxy for var in ('HTTPS_PROXY', 'HTTP_PROXY', 'https_proxy',
                                  'http_proxy', 'ALL_PROXY', 'all_proxy')}
    env.update(NO_PROXY='', no_proxy='', HF_HUB_OFFLINE='',
               HF_HOME=str(tmp_path / 'hf'), XDG_CACHE_HOME=str(tmp_path))
    config = REPO / 'configs' / 'lmclip_voc_mlt_vitb16.py'
    # test.py --zero-shot, and train.py before it builds anything (no
    # config dump, no work dir: the weights are loaded when training starts,
    # their absence is found first)
    for args in (['test.py', config, '--zero-shot'], ['train.py', config]):
        work_dir = tmp_path / args[0]
        proc = tool(args + ['--work-dir', work_dir], env=env, check=False)
        assert proc.returncode == 1
        assert 'Traceback' not in proc.stderr
        lines = _error_lines(proc.stderr)
        assert len(lines) == 1 and proc.stderr.rstrip().endswith(lines[0])
        assert lines[0].startswith(
            "error: PretrainedWeightsUnavailable: the 'openai' weights of "
            'ViT-B-16 are not in the local cache and cannot be downloaded '
            '(https://huggingface.co cannot be reached: '), lines[0]
        assert lines[0].endswith(
            '--cfg-options model.clip.pretrained=/path/to/ViT-B-16.pt '
            '(OpenAI\'s released file or an open_clip state dict)')
        assert 'Config:' not in proc.stdout + proc.stderr
        assert not work_dir.exists()


def test_a_tokenizer_without_its_package_is_one_error_line(tool, tmp_path):
    """SigLIP's tokenizer is Hugging Face's: without ``transformers`` (not a
    dependency) one line says which package to install, before the model
    is built (with it installed but offline: that its files are missing)."""
    proc = tool(['train.py', TOY, '--work-dir', tmp_path / 'w',
                 '--cfg-options', 'model.clip.model_name=ViT-B-16-SigLIP'],
                env=dict(HF_HUB_OFFLINE='1'), check=False)
    assert proc.returncode == 1
    assert 'Traceback' not in proc.stderr
    lines = _error_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith('error: ClipDependencyError: the tokenizer of '
                               'ViT-B-16-SigLIP '), lines[0]
    try:
        import transformers  # noqa: F401
    except ImportError:
        assert lines[0].endswith("needs the package 'transformers', which "
                                 'is not installed: pip install '
                                 'transformers'), lines[0]


@pytest.mark.parametrize('option,expected', [
    ('train_cfg.max_epoch=1',
     "error: --cfg-options train_cfg.max_epoch: EpochBasedTrainLoop takes no "
     "argument 'max_epoch'; did you mean 'max_epochs'? (its arguments: "
     'runner, dataloader, max_epochs, val_begin, val_interval, '
     'dynamic_intervals)'),
    ('model.loss.gama_neg=3.0',
     "error: --cfg-options model.loss.gama_neg: BalancedAsymmetricLoss takes "
     "no argument 'gama_neg'; did you mean 'gamma_neg'? (its arguments: "
     'gamma_pos, gamma_neg, clip, eps, label_smoothing, class_weight, '
     'loss_weight, global_batch, reduction)'),
])
def test_unknown_config_key_is_the_only_output(option, expected, tool,
                                               tmp_path):
    """A typo in --cfg-options: one line with the component's arguments,
    before anything is built or logged (no config dump)."""
    for tool_args in (['train.py', TOY, '--work-dir', tmp_path / 'w'],
                      ['test.py', TOY, TOY, '--work-dir', tmp_path / 't']):
        proc = tool(tool_args + ['--cfg-options', option], check=False)
        assert proc.returncode == 1
        assert proc.stdout.strip() == '' and \
            proc.stderr.strip() == expected, proc.stderr[-2000:]


def test_missing_checkpoints_and_bad_images_are_one_line(tool, tmp_path):
    image = tmp_path / 'bad.jpg'
    image.write_bytes(b'not a jpeg')
    half, good = tmp_path / 'half.jpg', tmp_path / 'good.jpg'
    from PIL import Image
    Image.new('RGB', (64, 64), 'red').save(good)
    half.write_bytes(good.read_bytes()[:200])
    missing = tmp_path / 'nope.pth'
    cases = [
        (['test.py', TOY, missing], f'error: checkpoint not found: {missing}'),
        (['infer.py', TOY, missing, good],
         f'error: checkpoint not found: {missing}'),
        (['train.py', TOY, '--resume', missing, '--work-dir', tmp_path / 'w'],
         f'error: --resume checkpoint not found: {missing}'),
        (['infer.py', TOY, 'none', tmp_path / 'no.jpg'],
         f'error: image not found: {tmp_path / "no.jpg"}'),
        (['infer.py', TOY, 'none', image],
         f'error: {image} cannot be read as an image (UnidentifiedImageError: '
         f"cannot identify image file '{image}')"),
        (['infer.py', TOY, 'none', half],
         f'error: {half} cannot be read as an image (OSError: '),
    ]
    for args, expected in cases:
        proc = tool(args, check=False)
        assert proc.returncode == 1, args
        assert 'Traceback' not in proc.stderr
        assert proc.stderr.strip().startswith(expected) and \
            len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-2000:]
