# Copyright (c) lmclip_mm authors.
"""Speed and memory of LM-CLIP's runner path against the reference loop.

Measures, for a config and a number of steps after warm-up:

* **ours**: the registered ``LMCLIPClassifier`` built from the config with
  its data preprocessor and the config's optimizer wrapper, driven as
  ``tools/train.py`` drives it (``model.train_step(batch, optim_wrapper)``,
  ``model.val_step(batch)`` under ``torch.no_grad()``);
* **baseline**: the straightforward PyTorch loop of the paper's reference
  implementation (``paper_reference.ReferenceLoop`` in this package):
  same open_clip model and same initial weights (state dict copied), same
  math,
  per step encode images, captions (77 tokens) and ALL class prompts (77
  tokens, tokenised once), BAL + contrastive loss, ``torch.optim.AdamW``;
  evaluation runs the same forward per batch and keeps the logits.

Both run in this one process, alternating step by step, on the same
pre-made batches (the config's real pipeline on generated JPEGs, collected
before timing: no data-loading time). Printed: training step time (median),
training images/s, evaluation images/s (a whole timed evaluation: ours
computes its class embeddings once at its start), peak memory (each path
once more in a fresh process of its own: peak RSS on CPU, peak allocated
CUDA memory on GPU), the ratio of each figure, and the FLOPs of a training
step and an evaluation batch per path (:func:`B.count_flops`) with
the TFLOP/s they ran at (and MFU with ``--peak-tflops``). Then: ours
trained from the real dataloader (the config's ``num_workers``), and the
throughput of the data pipeline alone (decode + resize + pack) against
ours' training consumption.

Before timing, both paths must give the same loss on the first batch
(float32, relative difference <= 1e-5) and the same evaluation logits;
otherwise the script prints FAIL and exits with status 1: a faster path
with different math does not count.

    python tools/analysis/benchmark.py --model ViT-B-16 --classes 80 \
        --batch-size 8 --steps 3 --warmup 1
    python tools/analysis/benchmark.py --model lmclip-tiny-vit --classes 20
"""
import argparse
import json
import os
import os.path as osp
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext

import open_clip
import torch
from mmengine.config import DictAction

import lmclip_mm  # noqa: F401  registers components
from lmclip_tools import CONFIGS as CONFIG_DIR
from lmclip_tools import REPO
from lmclip_tools.analysis import data_benchmark
from lmclip_tools.analysis import paper_reference as B

CONFIGS = {
    20: osp.join(CONFIG_DIR, 'lmclip_voc_mlt_vitb16.py'),
    80: osp.join(CONFIG_DIR, 'lmclip_coco_mlt_vitb16.py'),
}
#: where the configs read VOC-MLT / COCO-MLT (data/README.md)
REPO_DATA = osp.join(REPO, 'data')
#: --classes -> (dataset, its train split file under --data-dir)
TRAIN_SPLITS = {20: ('VOC-MLT', 'voc_mlt/longtail2012/voc_lt_train.txt'),
                80: ('COCO-MLT', 'coco_mlt/longtail2017/coco_lt_train.txt')}
AMP_DTYPES = {'none': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}
PARITY_RTOL = 1e-5


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--model', default='ViT-B-16',
                   help='open_clip model (random init, no download): '
                   'ViT-B-16, RN50, lmclip-tiny-vit, lmclip-tiny-rn, ...')
    p.add_argument('--classes', type=int, default=80, choices=(20, 80),
                   help='20 (VOC-MLT) or 80 (COCO-MLT) classes')
    p.add_argument('--config', default=None,
                   help='config (default: the ViT-B/16 config of the '
                   'VOC-MLT / COCO-MLT setting of --classes)')
    p.add_argument('--batch-size', type=int, default=8)
    p.add_argument('--eval-batch-size', type=int, default=None,
                   help='default: --batch-size')
    p.add_argument('--image-size', type=int, default=None,
                   help='default: the model\'s own input size')
    p.add_argument('--device', default='cpu', choices=('cpu', 'cuda'))
    p.add_argument('--amp', default='none', choices=tuple(AMP_DTYPES))
    p.add_argument('--steps', type=int, default=3,
                   help='timed training steps (and evaluation batches)')
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--eval-steps', type=int, default=None,
                   help='timed evaluation batches (default: --steps)')
    p.add_argument('--num-workers', type=int, default=None,
                   help='dataloader workers (default: the config\'s)')
    p.add_argument('--load-batches', type=int, default=16,
                   help='batches timed for the data-loading throughput')
    p.add_argument('--jpeg-size', type=int, nargs=2, default=(500, 375),
                   metavar=('W', 'H'), help='generated JPEG size')
    p.add_argument('--data-images', type=int, default=None,
                   help='generated JPEGs (default: what the runs need)')
    p.add_argument('--data-dir', default=None,
                   help='folder with the voc_mlt/ and coco_mlt/ split files '
                   '(data/README.md): the class names and train labels of '
                   'the --classes dataset are read from it. Default: the '
                   'repository\'s data/ when it holds them, else the '
                   'built-in class names and a synthetic long tail')
    p.add_argument('--memory', default='process',
                   choices=('process', 'none'),
                   help='process: measure each path\'s peak memory in a '
                   'fresh process of its own')
    p.add_argument('--memory-steps', type=int, default=2,
                   help='training steps (then 1 evaluation batch) of each '
                   'memory process')
    p.add_argument('--no-flops', action='store_true',
                   help='skip counting the FLOPs of a step (one extra '
                   'uncounted-time forward/backward per path)')
    p.add_argument('--peak-tflops', type=float, default=None,
                   help='peak TFLOP/s of the device at the run\'s dtype: '
                   'also print model FLOPs utilisation (MFU)')
    p.add_argument('--no-dataloader', action='store_true',
                   help='skip the real-dataloader runs')
    p.add_argument('--threads', type=int, default=None,
                   help='torch.set_num_threads (default: torch\'s)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--work-dir', default=None,
                   help='where to write the generated data (default: a '
                   'temporary folder, removed at the end)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='key=value overrides of the config (mmengine '
                   'syntax), e.g. optim_wrapper.optimizer.fused=True')
    p.add_argument('--perturb-baseline', type=float, default=0.0,
                   help='TESTING ONLY: add this to the baseline BAL clip '
                   'margin (different math: the parity check must fail)')
    p.add_argument('--part', default='model',
                   choices=('model', 'data', 'all'),
                   help='what to measure: the model (training and '
                   'evaluation steps, memory, FLOPs; the default), the data '
                   'pipeline (per core against the paper\'s __getitem__, '
                   'and the paper protocol\'s data work), or both')
    data_benchmark.add_arguments(p)
    p.add_argument('--child', choices=('ours', 'baseline'),
                   help=argparse.SUPPRESS)
    p.add_argument('--state', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.eval_batch_size is None:
        args.eval_batch_size = args.batch_size
    if args.eval_steps is None:
        args.eval_steps = args.steps
    if args.steps < 1 or args.warmup < 0 or args.eval_steps < 1:
        p.error('need --steps >= 1, --eval-steps >= 1 and --warmup >= 0')
    if args.config is None:
        args.config = CONFIGS[args.classes]
    split_file = osp.join(args.data_dir or REPO_DATA,
                          TRAIN_SPLITS[args.classes][1])
    if args.data_dir is None:
        args.data_dir = REPO_DATA if osp.isfile(split_file) else None
    elif not osp.isdir(args.data_dir):
        p.error(f'--data-dir {args.data_dir}: no such folder')
    elif not osp.isfile(split_file):
        p.error(f'--data-dir {args.data_dir}: no {split_file} (the '
                f'{TRAIN_SPLITS[args.classes][0]} train split; see '
                'data/README.md), or leave --data-dir out for a synthetic '
                'long tail')
    return args


# ---------------------------------------------------------------------------
# set-up


def machine_info(device):
    cpu = platform.processor() or '?'
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    ncpu = len(os.sched_getaffinity(0)) if hasattr(
        os, 'sched_getaffinity') else os.cpu_count()
    text = (f'{ncpu} CPU cores ({cpu}), torch {torch.__version__}, '
            f'{torch.get_num_threads()} torch threads')
    if device == 'cuda':
        text += f', GPU {torch.cuda.get_device_name()}'
    return text, ncpu


def native_image_size(model_name):
    cfg = open_clip.get_model_config(model_name)
    if cfg is None:
        raise ValueError(f'unknown open_clip model {model_name!r}')
    size = cfg['vision_cfg'].get('image_size', 224)
    return size if isinstance(size, int) else size[0]


def _set_resize(pipeline, size):
    resized = False
    for t in pipeline:
        if t.get('type') in ('Resize', 'mmpretrain.Resize',
                             'LoadResizedImage'):
            t['scale'] = (size, size)
            resized = True
    if not resized:  # e.g. the toy config: its images match the model
        i = next((k + 1 for k, t in enumerate(pipeline)
                  if t.get('type') == 'LoadImageFromFile'), 0)
        pipeline.insert(i, dict(type='Resize', scale=(size, size),
                                interpolation='bicubic'))


def load_config(args, image_size, data_root=None, files=None):
    from mmengine.config import Config
    from lmclip_tools import launch
    cfg = Config.fromfile(args.config)
    clip = dict(model_name=args.model, pretrained=None)
    if image_size != native_image_size(args.model):
        clip['force_image_size'] = image_size
    cfg.model.clip = clip
    for key, batch_size in (('train_dataloader', args.batch_size),
                            ('val_dataloader', args.eval_batch_size)):
        loader = cfg[key]
        loader.batch_size = batch_size
        if args.num_workers is not None:
            loader.num_workers = args.num_workers
        if data_root is not None:
            loader.dataset.data_root = data_root
            loader.dataset.update(files)
            if loader.dataset.get('cache'):  # beside the generated data
                loader.dataset.cache_dir = osp.join(
                    osp.dirname(data_root), 'image_cache')
        _set_resize(loader.dataset.pipeline, image_size)
    cfg.test_dataloader = cfg.val_dataloader
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    # tools/train.py's dataloader defaults (default_collate, workers).
    launch.set_dataloader_defaults(cfg)
    return cfg


def amp_context(device, dtype):
    if dtype is None:
        return nullcontext()
    return torch.autocast(device, dtype=dtype)


def build_ours(cfg, metainfo, device, amp):
    """The model and optimizer wrapper as tools/train.py builds them."""
    from mmengine.optim import build_optim_wrapper
    from mmpretrain.registry import MODELS
    model = MODELS.build(cfg.model)
    model.set_dataset_meta(metainfo)  # what DatasetMetaHook does
    model.to(device)
    wrapper_cfg = cfg.optim_wrapper.copy()
    if amp != 'none' and device == 'cuda':
        from lmclip_tools.launch import use_amp
        use_amp(wrapper_cfg)  # as tools/train.py --amp, plus the dtype
        wrapper_cfg.dtype = 'bfloat16' if amp == 'bf16' else 'float16'
    optim_wrapper = build_optim_wrapper(model, wrapper_cfg)
    return model, optim_wrapper


def build_reference(cfg, metainfo, device, amp, model_name, image_size,
                    state_dict=None, perturb=0.0):
    """The baseline: a plain open_clip model and the reference loop."""
    from lmclip_mm.datasets.class_stats import class_weights
    kwargs = {}
    if image_size != native_image_size(model_name):
        kwargs['force_image_size'] = image_size
    clip = open_clip.create_model(model_name, pretrained=None, **kwargs)
    if state_dict is not None:
        clip.load_state_dict(state_dict)
    clip.to(device)
    m = cfg.model
    loss = dict(m.get('loss', {}))
    loss.pop('type', None)
    if perturb:
        loss['clip'] = (loss.get('clip', 0.05) or 0.0) + perturb
    power = m.get('class_weight_power', None)
    weight = None
    if power is not None:
        weight = torch.as_tensor(
            class_weights(metainfo['class_counts'],
                          metainfo['num_train_images'], power),
            dtype=torch.float32)
    contrastive = m.get('contrastive_loss', dict(type='CLIPContrastiveLoss'))
    optimizer = dict(cfg.optim_wrapper.optimizer)
    optimizer.pop('type')
    pre = m.get('data_preprocessor') or {}
    return B.ReferenceLoop(
        clip,
        open_clip.get_tokenizer(model_name),
        metainfo['classes'],
        m.get('prompt_template', 'a photo of a {}'),
        loss,
        weight,
        0.0 if contrastive is None else float(
            contrastive.get('loss_weight', 1.0)),
        optimizer,
        pre.get('mean', [123.675, 116.28, 103.53]),
        pre.get('std', [58.395, 57.12, 57.375]),
        amp_dtype=AMP_DTYPES[amp],
        logit_scale_max=m.get('logit_scale_max', None))


def ours_train_step(model, optim_wrapper, batch, device, amp):
    # On CPU mmengine's AmpOptimWrapper is unavailable: autocast around it.
    ctx = amp_context(device, AMP_DTYPES[amp]) if device == 'cpu' else \
        nullcontext()
    with ctx:
        log_vars = model.train_step(batch, optim_wrapper)
    return float(log_vars['loss'].detach())


def ours_eval_step(model, batch, device, amp):
    with torch.no_grad(), amp_context(device, AMP_DTYPES[amp]):
        out = model.val_step(batch)
    return torch.stack([ds.pred_score for ds in out]).float().cpu()


def step_flops(model, ref, batch, rbatch, eval_batch, eval_rbatch, device,
               amp):
    """FLOPs of one training step's forward + backward and of one
    evaluation batch (ours: class embeddings already cached), per path.
    No optimizer step is taken: the weights do not change."""
    def ours_train():
        with amp_context(device, AMP_DTYPES[amp]):
            data = model.data_preprocessor(batch, True)
            loss, _ = model.parse_losses(model(**data, mode='loss'))
        loss.backward()

    def ref_train():
        loss, _ = ref.loss(rbatch)
        loss.backward()

    model.train()
    ref.clip.train()
    flops = dict(ours_train=B.count_flops(ours_train),
                 baseline_train=B.count_flops(ref_train))
    model.zero_grad(set_to_none=True)
    ref.optimizer.zero_grad(set_to_none=True)
    model.eval()
    ref.clip.eval()
    ours_eval_step(model, eval_batch, device, amp)  # fills the cache
    flops['ours_eval'] = B.count_flops(
        lambda: ours_eval_step(model, eval_batch, device, amp))
    flops['baseline_eval'] = B.count_flops(
        lambda: ref.eval_step(eval_rbatch))
    return flops


def sync(device):
    if device == 'cuda':
        torch.cuda.synchronize()


def timed(fn, device):
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t, out


def progress(message: str) -> None:
    """One line of progress (flushed: the long phases run for minutes on a
    CPU)."""
    print(f'... {message}', flush=True)


def alternate(pairs, run, device, what='steps'):
    """For each ``(ours_arg, baseline_arg)`` pair, time ``run['ours']`` and
    ``run['baseline']`` on their argument, alternating which goes first,
    with a progress line every 30 s. Returns ``{'ours': [(seconds, output),
    ...], 'baseline': [...]}``."""
    out = {'ours': [], 'baseline': []}
    pairs = list(pairs)
    start = last = time.perf_counter()
    for i, (ours_arg, ref_arg) in enumerate(pairs):
        args = dict(ours=ours_arg, baseline=ref_arg)
        for who in (('ours', 'baseline') if i % 2 == 0 else
                    ('baseline', 'ours')):
            out[who].append(timed(lambda: run[who](args[who]), device))
        now = time.perf_counter()
        if now - last >= 30 and i + 1 < len(pairs):
            progress(f'{what}: {i + 1}/{len(pairs)} pairs done '
                     f'({now - start:.0f} s)')
            last = now
    return out


def collect_batches(cfg_loader, count, seed):
    """The first ``count`` batches of a dataloader (no workers)."""
    from mmengine.runner import Runner
    loader_cfg = cfg_loader.copy()
    loader_cfg.num_workers = 0
    loader_cfg.persistent_workers = False
    loader = Runner.build_dataloader(loader_cfg, seed=seed)
    batches = []
    for batch in endless(loader):
        batches.append(batch)
        if len(batches) == count:
            break
    return batches, loader.dataset.metainfo


def endless(loader):
    epoch = 0
    while True:
        if hasattr(loader.sampler, 'set_epoch'):
            loader.sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


# ---------------------------------------------------------------------------
# the memory processes


def child_main(args):
    """Run one path alone; print its memory figures as JSON.

    The state file (JSON) names the dumped config and the generated data;
    the child rebuilds the same batches from them (same seed).
    """
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    with open(args.state) as f:
        state = json.load(f)
    cfg = Config.fromfile(state['cfg_file'])
    init_default_scope('mmpretrain')
    device, amp = args.device, args.amp
    train, metainfo = collect_batches(cfg.train_dataloader,
                                      state['train_batches'], args.seed)
    evals, _ = collect_batches(cfg.val_dataloader, 1, args.seed)
    num_classes = len(metainfo['classes'])
    torch.manual_seed(args.seed)
    if device == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    rss_start = B.proc_status_kib('VmRSS')
    if args.child == 'ours':
        model, wrapper = build_ours(cfg, metainfo, device, amp)
        model.train()
        for batch in train:
            ours_train_step(model, wrapper, batch, device, amp)
        model.eval()
        for batch in evals:
            ours_eval_step(model, batch, device, amp)
    else:
        ref = build_reference(cfg, metainfo, device, amp, args.model,
                              state['image_size'])
        ref.clip.train()
        for batch in train:
            ref.train_step(B.to_ref_batch(batch, num_classes))
        ref.clip.eval()
        for batch in evals:
            ref.eval_step(B.to_ref_batch(batch, num_classes))
    sync(device)
    out = dict(
        rss_start_kib=rss_start,
        peak_kib=B.proc_status_kib('VmHWM'),
        cuda_peak=(torch.cuda.max_memory_allocated()
                   if device == 'cuda' else None))
    print('BENCHMARK_CHILD ' + json.dumps(out), flush=True)
    return 0


def run_child(kind, args, state_file, log_file):
    cmd = [sys.executable, '-m', __name__, '--child', kind,
           '--state', state_file, '--model', args.model, '--device',
           args.device, '--amp', args.amp, '--seed', str(args.seed)]
    env = dict(os.environ)
    if args.threads:
        env['OMP_NUM_THREADS'] = str(args.threads)
    with open(log_file, 'w') as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    with open(log_file) as f:
        text = f.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f'the {kind} memory process failed:\n'
                           f'{text[-3000:]}')
    line = [x for x in text.splitlines()
            if x.startswith('BENCHMARK_CHILD ')][-1]
    out = json.loads(line.split(' ', 1)[1])
    out['ru_maxrss_kib'] = usage.ru_maxrss  # KiB on Linux
    return out


# ---------------------------------------------------------------------------
# main


def rel_diff(a, b):
    return abs(a - b) / max(abs(b), 1e-12)


def fmt_ratio(x):
    return f'{x:.2f}x'


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        return child_main(args)
    if args.part == 'data':
        return run_data_part(args)
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner
    init_default_scope('mmpretrain')

    device, amp = args.device, args.amp
    if device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('error: --device cuda but CUDA is not available')
    info, ncpu = machine_info(device)
    load0 = os.getloadavg()
    image_size = args.image_size or native_image_size(args.model)
    print(f'machine: {info}')
    print(f'load average at start: {load0[0]:.2f} (1 min) on {ncpu} cores'
          + ('  WARNING: other processes use the CPU, timings are '
             'unreliable' if load0[0] > 0.5 * ncpu else ''))
    print(f'setting: {args.model} (random init), {args.classes} classes, '
          f'batch {args.batch_size} (eval {args.eval_batch_size}), '
          f'{image_size} px, {device}, amp {amp}, {args.steps} steps after '
          f'{args.warmup} warm-up, config {osp.relpath(args.config, REPO)}'
          + (', options ' + ' '.join(
              f'{k}={v}' for k, v in args.cfg_options.items())
             if args.cfg_options else ''))

    tmp = None
    if args.work_dir:
        root = args.work_dir
        os.makedirs(root, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix='lmclip_bench_')
        root = tmp.name
    data_root = osp.join(root, 'data')
    classes = B.class_names(args.classes, args.data_dir)
    n_train = (args.warmup + args.steps) * args.batch_size
    n_eval = (args.warmup + args.eval_steps) * args.eval_batch_size
    num_images = args.data_images or max(
        n_train, n_eval, (args.load_batches + 1) * args.batch_size, 64)
    t0 = time.perf_counter()
    labels = B.read_split_labels(args.classes, args.data_dir)
    files = B.write_standin_dataset(
        data_root, classes, num_images, tuple(args.jpeg_size),
        label_lists=labels, seed=args.seed)
    print(f'data: {num_images} generated {args.jpeg_size[0]}x'
          f'{args.jpeg_size[1]} JPEGs, labels from '
          + ('the real train split' if labels else 'a synthetic long tail')
          + f', template captions ({time.perf_counter() - t0:.1f} s)')

    cfg = load_config(args, image_size, data_root, files)
    torch.manual_seed(args.seed)
    train_batches, metainfo = collect_batches(
        cfg.train_dataloader, args.warmup + args.steps, args.seed)
    eval_batches, _ = collect_batches(
        cfg.val_dataloader, args.warmup + args.eval_steps, args.seed)
    ref_train = [B.to_ref_batch(b, args.classes) for b in train_batches]
    ref_eval = [B.to_ref_batch(b, args.classes) for b in eval_batches]

    torch.manual_seed(args.seed)
    model, optim_wrapper = build_ours(cfg, metainfo, device, amp)
    ref = build_reference(cfg, metainfo, device, amp, args.model, image_size,
                          state_dict=model.clip.state_dict(),
                          perturb=args.perturb_baseline)

    # ---- parity: same loss on the first batch, same eval logits (fp32)
    model.train()
    ref.clip.train()
    ref_amp, ref.amp_dtype = ref.amp_dtype, None
    with torch.no_grad():
        data = model.data_preprocessor(train_batches[0], True)
        ours_loss, ours_vars = model.parse_losses(
            model(**data, mode='loss'))
        ours_loss = float(ours_loss)
        ref_loss, ref_terms = ref.loss(ref_train[0])
        ref_loss = float(ref_loss)
    model.eval()
    ref.clip.eval()
    ours_logits = ours_eval_step(model, eval_batches[0], device, 'none')
    ref_logits = ref.eval_step(ref_eval[0])
    ref.amp_dtype = ref_amp
    loss_rel = rel_diff(ours_loss, ref_loss)
    logit_rel = float((ours_logits - ref_logits).abs().max() /
                      ref_logits.abs().max().clamp(min=1e-12))
    terms = ', '.join(
        f'{k} {float(ours_vars[k]):.7g} / {float(v):.7g}'
        for k, v in ref_terms.items() if k in ours_vars)
    ok = loss_rel <= PARITY_RTOL and logit_rel <= PARITY_RTOL
    print(f'parity (float32, same initial weights, first batch): loss ours '
          f'{ours_loss:.7g} baseline {ref_loss:.7g} (rel. diff '
          f'{loss_rel:.1e}; {terms}); eval logits max rel. diff '
          f'{logit_rel:.1e}; tolerance {PARITY_RTOL:g}: '
          + ('PASS' if ok else 'FAIL'))
    if not ok:
        print('FAIL: the two paths do not compute the same thing')
        return 1
    flops = None
    if not args.no_flops:
        progress('counting FLOPs of a training step and an eval batch')
        flops = step_flops(model, ref, train_batches[0], ref_train[0],
                           eval_batches[0], ref_eval[0], device, amp)

    # ---- training, alternating, on the pre-made batches
    progress(f'training: {len(train_batches)} steps of each path, '
             'alternating')
    model.train()
    ref.clip.train()
    runs = alternate(
        zip(train_batches, ref_train),
        dict(ours=lambda b: ours_train_step(model, optim_wrapper, b, device,
                                            amp),
             baseline=ref.train_step), device, 'training')
    times = {k: [dt for dt, _ in v[args.warmup:]] for k, v in runs.items()}
    losses = {k: [loss for _, loss in v] for k, v in runs.items()}
    train_s = {k: statistics.median(v) for k, v in times.items()}

    # ---- evaluation, alternating; each timed evaluation starts afresh
    progress(f'evaluation: {len(eval_batches)} batches of each path, '
             'alternating')
    model.eval()
    ref.clip.eval()
    for batch, rbatch in zip(eval_batches[:args.warmup],
                             ref_eval[:args.warmup]):
        ours_eval_step(model, batch, device, amp)
        ref.eval_step(rbatch)
    model.train()
    model.eval()  # drops the class-embedding cache: a new evaluation
    runs = alternate(
        zip(eval_batches[args.warmup:], ref_eval[args.warmup:]),
        dict(ours=lambda b: ours_eval_step(model, b, device, amp),
             baseline=ref.eval_step), device, 'evaluation')
    eval_times = {k: [dt for dt, _ in v] for k, v in runs.items()}
    n_eval_images = sum(len(b) for b in ref_eval[args.warmup:])
    eval_ips = {k: n_eval_images / sum(v) for k, v in eval_times.items()}
    eval_med = {k: statistics.median(v) for k, v in eval_times.items()}
    # ours' once-per-evaluation cost: the class embeddings, alone
    model.train()
    model.eval()
    with torch.no_grad(), amp_context(device, AMP_DTYPES[amp]):
        once_s, _ = timed(model.class_embeddings, device)
    ref = None  # frees the baseline's memory
    model.train()

    # ---- the real dataloader
    loader_ips = loader_start = loader_train_s = None
    if not args.no_dataloader:
        progress(f'the real dataloader: {args.load_batches} batches, then '
                 f'{args.warmup + args.steps} training steps from it')
        loader = Runner.build_dataloader(cfg.train_dataloader,
                                         seed=args.seed)
        it = endless(loader)
        t = time.perf_counter()
        next(it)
        loader_start = time.perf_counter() - t
        t = time.perf_counter()
        n = 0
        for _ in range(args.load_batches):
            n += len(next(it)['data_samples'])
        loader_ips = n / (time.perf_counter() - t)
        step_times = []
        t = time.perf_counter()
        for i in range(args.warmup + args.steps):
            ours_train_step(model, optim_wrapper, next(it), device, amp)
            sync(device)
            now = time.perf_counter()
            if i >= args.warmup:
                step_times.append(now - t)
            t = now
        loader_train_s = statistics.median(step_times)
        del it, loader
    model = optim_wrapper = None

    # ---- memory: each path alone in a fresh process
    mem = None
    if args.memory == 'process':
        progress('memory: each path alone in a fresh process')
        state_file = osp.join(root, 'state.json')
        cfg_file = osp.join(root, 'config.py')
        cfg.dump(cfg_file)
        with open(state_file, 'w') as f:
            json.dump(dict(cfg_file=cfg_file, image_size=image_size,
                           train_batches=max(1, args.memory_steps)), f)
        mem = {who: run_child(who, args, state_file,
                              osp.join(root, f'{who}.log'))
               for who in ('ours', 'baseline')}
    load1 = os.getloadavg()

    # ---- report
    bs, ebs = args.batch_size, args.eval_batch_size
    rows = [
        ('train s/step (median)', train_s['ours'], train_s['baseline'],
         train_s['baseline'] / train_s['ours'], '{:.3f}'),
        ('train images/s', bs / train_s['ours'], bs / train_s['baseline'],
         train_s['baseline'] / train_s['ours'], '{:.2f}'),
        ('eval images/s (median)', ebs / eval_med['ours'],
         ebs / eval_med['baseline'],
         eval_med['baseline'] / eval_med['ours'], '{:.2f}'),
        ('eval images/s (timed eval)', eval_ips['ours'],
         eval_ips['baseline'], eval_ips['ours'] / eval_ips['baseline'],
         '{:.2f}'),
    ]
    if mem is not None:
        if device == 'cuda':
            rows.append(('peak CUDA allocated (MiB)',
                         mem['ours']['cuda_peak'] / 2**20,
                         mem['baseline']['cuda_peak'] / 2**20,
                         mem['baseline']['cuda_peak'] /
                         mem['ours']['cuda_peak'], '{:.0f}'))
        peak = {w: (m['peak_kib'] or m['ru_maxrss_kib']) / 1024
                for w, m in mem.items()}
        grow = {w: peak[w] - (mem[w]['rss_start_kib'] or 0) / 1024
                for w in mem}
        rows.append(('peak RSS (MiB)', peak['ours'], peak['baseline'],
                     peak['baseline'] / peak['ours'], '{:.0f}'))
        rows.append(('  of which model+training', grow['ours'],
                     grow['baseline'], grow['baseline'] / grow['ours'],
                     '{:.0f}'))
    print()
    print('ratio = baseline/ours for times and memory, ours/baseline for '
          'rates (> 1: ours is faster / smaller)')
    print(f'{"":28s}{"ours":>12s}{"baseline":>12s}{"ratio":>10s}')
    for name, a, b, r, f in rows:
        print(f'{name:28s}{f.format(a):>12s}{f.format(b):>12s}'
              f'{fmt_ratio(r):>10s}')
    print(f'train step times (s): ours '
          f'{" ".join(f"{t:.3f}" for t in times["ours"])}; baseline '
          f'{" ".join(f"{t:.3f}" for t in times["baseline"])}')
    print(f'train losses: ours {" ".join(f"{x:.5f}" for x in losses["ours"])}'
          f'; baseline '
          f'{" ".join(f"{x:.5f}" for x in losses["baseline"])}')
    print(f'eval batch times (s): ours '
          f'{" ".join(f"{t:.3f}" for t in eval_times["ours"])}; baseline '
          f'{" ".join(f"{t:.3f}" for t in eval_times["baseline"])}')
    if flops is not None:
        rates = dict(
            ours_train=flops['ours_train'] / train_s['ours'],
            baseline_train=flops['baseline_train'] / train_s['baseline'],
            ours_eval=flops['ours_eval'] / eval_med['ours'],
            baseline_eval=flops['baseline_eval'] / eval_med['baseline'])
        parts = []
        for what in ('train', 'eval'):
            for who in ('ours', 'baseline'):
                key = f'{who}_{what}'
                text = (f'{who} {what} {flops[key] / 1e9:.4g} GFLOP = '
                        f'{rates[key] / 1e12:.4g} TFLOP/s')
                if args.peak_tflops:
                    mfu = 100 * rates[key] / 1e12 / args.peak_tflops
                    text += f' (MFU {mfu:.1f}%)'
                parts.append(text)
        print('FLOPs per training step (forward + backward) and per '
              'evaluation batch (matmuls, convolutions and attention, counted '
              'by torch.utils.flop_counter), at the median time: '
              + '; '.join(parts))
    split = 4952 if args.classes == 20 else 5000
    n_b = -(-split // ebs)
    est = {'ours': split / (once_s + n_b * eval_med['ours']),
           'baseline': split / (n_b * eval_med['baseline'])}
    print(f'eval: "median" = batch size / median batch time; "timed eval" '
          f'= {n_eval_images} images / the time of {args.eval_steps} '
          'batches of a fresh evaluation, where ours computes its class '
          f'embeddings once at the start ({once_s:.3f} s alone). For the '
          f'{split}-image test split that is {est["ours"]:.2f} vs '
          f'{est["baseline"]:.2f} images/s '
          f'({est["ours"] / est["baseline"]:.2f}x, estimated)')
    if mem is not None:
        what = 'peak allocated CUDA memory and ' if device == 'cuda' else ''
        print(f'memory: {what}peak RSS (VmHWM of /proc/self/status) of a '
              'fresh process per path: same imports and batches (built '
              'before the model), '
              f'then {args.memory_steps} training steps and 1 evaluation '
              'batch; "model+training" = peak minus the RSS before the '
              'model was built')
    if loader_ips is not None:
        consume = bs / train_s['ours']
        print(f'real dataloader ({cfg.train_dataloader.num_workers} '
              f'workers): ours train {loader_train_s:.3f} s/step '
              f'({bs / loader_train_s:.2f} images/s, data loading '
              'included)')
        cached = 'from the image cache' if cfg.train_dataloader.dataset.get(
            'cache') else 'decoded'
        print(f'data loading (the config\'s pipeline, {image_size} px, '
              f'{cached}; {args.jpeg_size[0]}x{args.jpeg_size[1]} '
              f'JPEG, {cfg.train_dataloader.num_workers} workers): '
              f'{loader_ips:.1f} images/s (start-up {loader_start:.1f} s '
              f'excluded) = {loader_ips / consume:.1f}x ours\' training '
              f'consumption ({consume:.2f} images/s; goal >= 3x: '
              + ('met' if loader_ips >= 3 * consume else 'NOT met') + ')')
    print(f'load average at end: {load1[0]:.2f} (1 min)')
    if tmp is not None:
        tmp.cleanup()
    if args.part == 'all':
        return run_data_part(args)
    return 0


def run_data_part(args):
    """The data pipeline against the paper's (see data_benchmark.py)."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from lmclip_tools import launch
    init_default_scope('mmpretrain')
    info, ncpu = machine_info('cpu')
    load0 = os.getloadavg()
    print(f'machine: {info}', flush=True)
    print(f'load average at start: {load0[0]:.2f} (1 min) on {ncpu} cores'
          + ('  WARNING: other processes use the CPU, timings are '
             'unreliable' if load0[0] > 0.5 * ncpu else ''), flush=True)
    cfg = Config.fromfile(CONFIGS[80])
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    launch.set_dataloader_defaults(cfg)
    print(f'data part: config {osp.relpath(CONFIGS[80], REPO)} (its '
          'datasets, pipelines and loaders)', flush=True)
    data_benchmark.main(args, cfg, log=lambda *a: print(*a, flush=True))
    print(f'load average at end: {os.getloadavg()[0]:.2f} (1 min)')
    return 0


def cli():
    """``python tools/analysis/benchmark.py``."""
    sys.exit(main())


if __name__ == '__main__':
    cli()
