# The honest protocol of lmclip_coco_mlt_rn50.py (same model, loss, schedule
# and preprocessing): train on the train list minus a stratified 10 % val
# split, keep the best epoch on val, then test that checkpoint once on the
# test split after training (<work_dir>/test_best_checkpoint.json).
_base_ = ['./lmclip_coco_mlt_rn50.py']

# dataset settings
val_split = dict(val_fraction=0.1, val_seed=0)
train_dataloader = dict(dataset=dict(holdout_val=True, **val_split))
val_dataloader = dict(dataset=dict(split='val', **val_split))
# A class without a val image (a tail class of 4 train images keeps none at
# 10 %) has no AP on val: it is left out of the val means. The test
# evaluator keeps the paper's rule.
val_evaluator = dict(no_positive='exclude')

# runtime settings: test the best checkpoint on the test split once,
# after training
default_hooks = dict(test_best=dict(type='BestCheckpointTestHook'))
