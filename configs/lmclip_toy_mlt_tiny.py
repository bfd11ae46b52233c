# The CPU quickstart: LM-CLIP with a tiny randomly initialised CLIP
# (lmclip-tiny-rn: a 64 px ModifiedResNet of width 8 and a 2-layer text
# transformer of width 64) on the generated toy long-tailed set (written to
# data/toy_mlt/ on first use). No download; a few minutes on 2 CPU cores.
#
#   python tools/train.py configs/lmclip_toy_mlt_tiny.py
_base_ = [
    '_base_/models/lmclip.py',
    '_base_/datasets/toy_mlt.py',
    '_base_/default_runtime.py',
]

power = 1.0  # s: sampler and loss class-weight power

# model settings
model = dict(
    clip=dict(model_name='lmclip-tiny-rn', pretrained=None),
    # The BAL is scale-invariant (logits / max): a randomly initialised
    # model needs a large lambda to learn the class prompts in a few epochs.
    loss=dict(gamma_neg=4.0, gamma_pos=0.0, clip=0.05, label_smoothing=0.0,
              loss_weight=20.0),
    class_weight_power=power,
    # the toy images are drawn on a mid-grey background
    data_preprocessor=dict(mean=[127.5] * 3, std=[127.5] * 3))

# dataset settings
train_dataloader = dict(sampler=dict(power=power))

# schedule settings
max_epochs = 30
optim_wrapper = dict(
    type='SafeOptimWrapper',
    optimizer=dict(
        type='AdamW', lr=2e-3, betas=(0.9, 0.98), eps=1e-6,
        weight_decay=0.01))
# Warm-up for 2 epochs, then cosine annealing to 0 at the last epoch.
# `tools/train.py --cfg-options train_cfg.max_epochs=N` moves the cosine's
# end (and T_max) to N, so a shorter run anneals too (it prints the change).
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=2,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', by_epoch=True, T_max=max_epochs - 2,
         eta_min=0.0, begin=2, end=max_epochs),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=5)
val_cfg = dict()
test_cfg = dict()

# runtime settings
default_hooks = dict(logger=dict(interval=10))
# A seed and deterministic=True: --resume after a crash is bit-exact.
randomness = dict(seed=0, deterministic=True)
