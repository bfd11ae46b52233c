# MMPretrain's runtime, with the plugin imported and LM-CLIP's hooks.
_base_ = 'mmpretrain::_base_/default_runtime.py'

custom_imports = dict(imports=['lmclip_mm'], allow_failed_imports=False)

# mmengine's Runner, plus what it lacks on 0.10.x: no persistent_workers
# without workers, and torchrun on machines without GPUs (gloo). The scope
# prefix lets MMPretrain's own tools build it from mmengine's root registry.
runner_type = 'mmpretrain.LMCLIPRunner'

default_hooks = dict(
    logger=dict(interval=50),
    # Keep the last checkpoint, the best by overall mAP and the best by tail
    # mAP. AtomicCheckpointHook: mmengine's CheckpointHook whose files are
    # written to a temporary file and renamed (a kill never leaves a
    # half-written one).
    checkpoint=dict(
        type='AtomicCheckpointHook',
        interval=1,
        max_keep_ckpts=1,
        save_best=['long-tail/mAP', 'long-tail/mAP_tail'],
        rule=['greater', 'greater']),
)

# DatasetMetaHook gives the model the dataset's class names (its prompts)
# and train class counts (the loss class weights). ExactResumeHook saves the
# RNG states and the sampler position in every checkpoint (--resume is
# exact; see README). SyncBuffersHook averages the BatchNorm running
# statistics of all ranks at the end of each epoch.
custom_hooks = [
    dict(type='DatasetMetaHook'),
    dict(type='ExactResumeHook'),
    dict(type='SyncBuffersHook'),
]
