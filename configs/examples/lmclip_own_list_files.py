# LM-CLIP on your own long-tailed multi-label data, in the list-file format
# of data/README.md:
#   data/my_lt/labels.txt   "cat 0", "dog 1", ...           (name index)
#   data/my_lt/train.txt    "images/0001.jpg 0 3"           (path labels...)
#   data/my_lt/test.txt     "images/0950.jpg 1"
# Images are given template captions ("a photo of a cat, dog"); class names,
# class counts and head/middle/tail groups come from the train list.
#
#   python tools/train.py configs/examples/lmclip_own_list_files.py
#
# Everything else is MMPretrain's own runtime (mmpretrain::).
_base_ = ['mmpretrain::_base_/default_runtime.py']
custom_imports = dict(imports=['lmclip_mm'], allow_failed_imports=False)

data_root = 'data/my_lt/'
dataset = dict(
    type='LongTailMultiLabelDataset',
    data_root=data_root,
    labels_file='labels.txt',
    train_file='train.txt',
    test_file='test.txt',
    cache=True)

# The paper's preprocessing: PIL decode ignoring EXIF orientation, 224x224
# bilinear antialiased resize without crop (= torchvision's Resize((224,
# 224)) on a PIL image), in one step; keep it first (pipeline.0). cache=True
# keeps its output in the exact image cache (README "Image cache").
load = dict(type='LoadResizedImage', scale=(224, 224))
train_pipeline = [
    load,
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs', algorithm_keys=['caption']),
]
test_pipeline = [load, dict(type='PackInputs')]
train_dataloader = dict(
    batch_size=8,
    num_workers=2,
    dataset=dict(**dataset, split='train', pipeline=train_pipeline),
    # LM-CLIP's class-occurrence sampling
    sampler=dict(type='ClassAwareRepeatSampler', power=1.0))
val_dataloader = dict(
    batch_size=32,
    num_workers=2,
    dataset=dict(**dataset, split='test', pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
test_dataloader = val_dataloader
# long-tail/mAP, mAP_head/_middle/_tail, AUROC, mAP_single_label/_multi_label
# and the precision/recall/F1 of the predicted labels
val_evaluator = [
    dict(type='LongTailAveragePrecision'),
    dict(type='PredLabelMultiLabelMetric'),
]
test_evaluator = val_evaluator

model = dict(
    type='LMCLIPClassifier',
    # OpenAI's CLIP ViT-B/16 (downloaded once by open_clip), or a local file
    clip=dict(model_name='ViT-B-16', pretrained='openai'),
    loss=dict(type='BalancedAsymmetricLoss', gamma_neg=4.0, clip=0.05,
              loss_weight=1.0),
    contrastive_loss=dict(type='CLIPContrastiveLoss'),
    class_weight_power=1.0)

max_epochs = 50
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=1e-6, betas=(0.9, 0.98), eps=1e-9,
                   weight_decay=0.01))
param_scheduler = dict(type='CosineAnnealingLR', by_epoch=True,
                       T_max=max_epochs, eta_min=0.0)
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=1)
val_cfg = dict()
test_cfg = dict()

default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=1,
                    save_best=['long-tail/mAP', 'long-tail/mAP_tail'],
                    rule='greater'))
# DatasetMetaHook gives the model the class names (its prompts) and the
# class counts (BAL's class weights) of the dataset.
custom_hooks = [dict(type='DatasetMetaHook')]
