# A plain MMPretrain multi-label ResNet with LM-CLIP's parts: the Balanced
# Asymmetric Loss in MMPretrain's MultiLabelLinearClsHead, class-aware
# sampling and the long-tail metric, on your own list files (same format as
# lmclip_own_list_files.py). No CLIP involved.
#
#   python tools/train.py configs/examples/resnet_bal_own_list_files.py
_base_ = [
    'mmpretrain::_base_/default_runtime.py',
    'mmpretrain::_base_/schedules/imagenet_bs256.py',
]
custom_imports = dict(imports=['lmclip_mm'], allow_failed_imports=False)

num_classes = 20  # the lines of labels.txt (DatasetMetaHook checks it)
data_root = 'data/my_lt/'
dataset = dict(
    type='LongTailMultiLabelDataset',
    data_root=data_root,
    labels_file='labels.txt',
    train_file='train.txt',
    test_file='test.txt')

# MMPretrain's ImageNet pipelines (keep the resizing step second).
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=256, edge='short'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
data_preprocessor = dict(
    num_classes=num_classes,
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True,
    to_onehot=True)
train_dataloader = dict(
    batch_size=32,
    num_workers=2,
    dataset=dict(**dataset, split='train', pipeline=train_pipeline),
    sampler=dict(type='ClassAwareRepeatSampler', power=1.0))
val_dataloader = dict(
    batch_size=64,
    num_workers=2,
    dataset=dict(**dataset, split='test', pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
test_dataloader = val_dataloader
val_evaluator = [
    dict(type='LongTailAveragePrecision'),  # long-tail/mAP, _head, ...
    dict(type='AveragePrecision'),          # mmpretrain's multi-label/mAP
    dict(type='MultiLabelMetric'),          # sigmoid >= 0.5 of the head
]
test_evaluator = val_evaluator

model = dict(
    type='ImageClassifier',
    backbone=dict(type='ResNet', depth=50),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='MultiLabelLinearClsHead',
        num_classes=num_classes,
        in_channels=2048,
        # sum over the classes / images, as mmpretrain's multi-label losses;
        # class weights: lmclip_mm.datasets.class_weights(counts, N, power)
        loss=dict(type='BalancedAsymmetricLoss', gamma_neg=4.0, clip=0.05)))

# the train counts' head/middle/tail groups to LongTailAveragePrecision, and
# a check that num_classes is the labels file's
custom_hooks = [dict(type='DatasetMetaHook')]

train_cfg = dict(by_epoch=True, max_epochs=100, val_interval=1)
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=1,
                    save_best='long-tail/mAP', rule='greater'))
