# The generated toy long-tailed multi-label set (lmclip_mm.datasets.ToyMLT):
# 20 classes (colour x shape), 64x64 images, a long-tailed train split with
# head/middle/tail classes under the benchmark thresholds and a balanced test
# split. It is written into data_root on first use (no download).
dataset_type = 'ToyMLT'
data_root = 'data/toy_mlt/'

# LoadResizedImage: pillow decode + resize to the model's 64x64 (the toy
# images are 64x64 already: they are only copied; any other image, e.g. a
# photo given to tools/infer.py, is resized). cache=True keeps its output in
# the image cache (see configs/_base_/datasets/voc_mlt.py).
train_pipeline = [
    dict(type='LoadResizedImage', scale=(64, 64)),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs', algorithm_keys=['caption']),
]
test_pipeline = [
    dict(type='LoadResizedImage', scale=(64, 64)),
    dict(type='PackInputs', algorithm_keys=['caption']),
]

train_dataloader = dict(
    batch_size=32,
    num_workers=0,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='train',
        cache=True,
        pipeline=train_pipeline),
    sampler=dict(type='ClassAwareRepeatSampler', power=1.0),
)
val_dataloader = dict(
    batch_size=64,
    num_workers=0,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='test',
        cache=True,
        pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(type='LongTailAveragePrecision')

test_dataloader = val_dataloader
test_evaluator = val_evaluator
