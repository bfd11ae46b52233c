# VOC-MLT (Wu et al. 2020 long-tailed split of Pascal VOC): 1,142 train
# images from VOC2012 trainval, 4,952 test images from VOC2007 test, 20
# classes. See data/README.md for the layout under data_root.
dataset_type = 'VOCMLT'
data_root = 'data/voc_mlt/'

# The paper's preprocessing: PIL decode (EXIF orientation ignored),
# torchvision's Resize((224, 224)) on the PIL image (bilinear, antialiased,
# no crop), RandomHorizontalFlip (train only), ToTensor + ImageNet Normalize
# (the model's data preprocessor); equal to torchvision to float rounding
# (tests/configs/test_paper_preprocessing.py). LoadResizedImage decodes and
# resizes in one step; keep it first (tools address pipeline.0.scale).
# cache=True keeps its output (uint8, 224x224, ~150 KB an image) in an exact
# on-disk cache shared by the workers, the ranks and later runs
# (LMCLIP_CACHE_DIR or cache_dir= moves it; README "Image cache").
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
