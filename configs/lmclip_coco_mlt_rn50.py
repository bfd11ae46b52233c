# LM-CLIP, CLIP RN50, COCO-MLT.
_base_ = [
    '_base_/models/lmclip_rn50.py',
    '_base_/datasets/coco_mlt.py',
    '_base_/schedules/lmclip_adamw_cosine_50e.py',
    '_base_/default_runtime.py',
]

power = 1.35  # s: sampler and loss class-weight power

# model settings
model = dict(
    loss=dict(gamma_neg=9.8, gamma_pos=0.0, clip=0.05, label_smoothing=0.1,
              loss_weight=6.0),
    class_weight_power=power)

# dataset settings
train_dataloader = dict(sampler=dict(power=power))

# schedule settings
optim_wrapper = dict(optimizer=dict(lr=1e-7))
