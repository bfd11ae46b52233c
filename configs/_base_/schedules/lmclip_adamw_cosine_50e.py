# The paper's schedule: AdamW (betas 0.9/0.98, eps 1e-9, weight decay 0.01),
# batch 8 on one GPU, 50 epochs, cosine annealing per epoch down to 0,
# evaluation every epoch. The lr differs per config.
# SafeOptimWrapper: a non-finite loss or gradient stops training with the
# iteration and every loss term named, before the optimizer steps
# (on_nonfinite='skip' skips such steps instead).
optim_wrapper = dict(
    type='SafeOptimWrapper',
    optimizer=dict(
        type='AdamW',
        lr=1e-6,
        betas=(0.9, 0.98),
        eps=1e-9,
        weight_decay=0.01))

param_scheduler = dict(
    type='CosineAnnealingLR', by_epoch=True, T_max=50, eta_min=0.0,
    begin=0, end=50)

train_cfg = dict(by_epoch=True, max_epochs=50, val_interval=1)
val_cfg = dict()
test_cfg = dict()

# The paper trains with batch 8 on 1 GPU. `tools/train.py --auto-scale-lr`
# scales lr linearly by (num_gpus * batch_size) / base_batch_size.
auto_scale_lr = dict(base_batch_size=8, enable=False)
