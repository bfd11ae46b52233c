# VOC-MLT (Wu et al. 2020 long-tailed split of Pascal VOC): 1,142 train
# images from VOC2012 trainval, 4,952 test images from VOC2007 test, 20
# classes. See data/README.md for the layout under data_root.
dataset_type = 'VOCMLT'
data_root = 'data/voc_mlt/'

# Exactly the paper's code: PIL.Image.open(path).convert('RGB') (pillow
# decoder, EXIF orientation IGNORED), torchvision Resize((224, 224)) on the
# PIL image (PIL bilinear WITH antialiasing, no crop, aspect not kept),
# RandomHorizontalFlip (train only), ToTensor + ImageNet Normalize (the
# model's data preprocessor). Equal to torchvision to float rounding
# (tests/configs/test_paper_preprocessing.py). LoadResizedImage decodes and
# resizes in one step; keep it first (tools address pipeline.0.scale).
#
# cache=True: the output of LoadResizedImage (uint8, 224x224) is kept in an
# exact on-disk image cache, filled when the dataset is built and shared by
# the loader workers, the ranks and later runs (~150 KB per image; set
# LMCLIP_CACHE_DIR or cache_dir= to move it, cache=False to decode every
# time; see README "Image cache").
train_pipeline = [
    dict(type='LoadResizedImage', scale=(224, 224)),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs', algorithm_keys=['caption']),
]
test_pipeline = [
    dict(type='LoadResizedImage', scale=(224, 224)),
    dict(type='PackInputs', algorithm_keys=['caption']),
]

train_dataloader = dict(
    batch_size=8,
    num_workers=4,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='train',
        cache=True,
        pipeline=train_pipeline),
    # LM-CLIP's class-occurrence sampling; `power` is set per config.
    sampler=dict(type='ClassAwareRepeatSampler', power=1.0),
)
val_dataloader = dict(
    batch_size=32,
    num_workers=4,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='test',
        cache=True,
        pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
# The paper's protocol: softmax over the classes before AP.
val_evaluator = dict(type='LongTailAveragePrecision', apply_softmax=True)

test_dataloader = val_dataloader
test_evaluator = val_evaluator
