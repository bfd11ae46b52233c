# Runtime settings shared by the lmclip_mm configs (as mmpretrain's
# configs/_base_/default_runtime.py, plus the plugin import).
default_scope = 'mmpretrain'
custom_imports = dict(imports=['lmclip_mm'], allow_failed_imports=False)

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # Keep the last checkpoint, the best by overall mAP and, separately,
    # the best by tail mAP. AtomicCheckpointHook = mmengine's CheckpointHook
    # whose files (checkpoints, best, last_checkpoint) are written to a
    # temporary file and renamed: a kill never leaves a half-written one.
    checkpoint=dict(
        type='AtomicCheckpointHook',
        interval=1,
        max_keep_ckpts=1,
        save_best=['long-tail/mAP', 'long-tail/mAP_tail'],
        rule=['greater', 'greater']),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='VisualizationHook', enable=False),
)

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    # tools/train.py switches to gloo by itself on machines without GPUs.
    dist_cfg=dict(backend='nccl'),
)

vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='UniversalVisualizer', vis_backends=vis_backends)

log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=None, deterministic=False)

# DatasetMetaHook passes the dataset's metainfo (class names, train class
# counts) to the model before training/evaluation: LMCLIPClassifier builds
# its class prompts and loss class weights from it. ExactResumeHook saves the
# RNG states and the sampler position in every checkpoint, so that --resume
# continues exactly where a run stopped (bit-exact on CPU with a seed,
# deterministic=True and num_workers=0; see README).
# SyncBuffersHook (mmengine's) averages the BatchNorm running statistics of
# all processes at the end of each epoch (a no-op with one process): each
# rank's statistics come from its own batches, and without it the ranks
# would validate with different ones and the checkpoint would hold rank
# 0's only.
custom_hooks = [
    dict(type='DatasetMetaHook'),
    dict(type='ExactResumeHook'),
    dict(type='SyncBuffersHook'),
]
