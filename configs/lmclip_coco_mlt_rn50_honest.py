# The HONEST protocol of configs/lmclip_coco_mlt_rn50.py (same model, loss,
# schedule and preprocessing): train on the train list minus a stratified
# 10 % validation split, choose the best epoch on that val split, then test
# the best checkpoint on the test split ONCE, at the end (written to
# <work_dir>/test_best_checkpoint.json). The paper's protocol (best epoch
# chosen on the test split) is configs/lmclip_coco_mlt_rn50.py.
_base_ = ['./lmclip_coco_mlt_rn50.py']

val_split = dict(val_fraction=0.1, val_seed=0)
train_dataloader = dict(dataset=dict(holdout_val=True, **val_split))
val_dataloader = dict(dataset=dict(split='val', **val_split))
# A class without a val image (a tail class of 4 train images keeps 0 of
# them at 10 %) has no AP on val: leave it out of the val means. The test
# evaluator keeps the paper's rule.
val_evaluator = dict(no_positive='exclude')
# test_dataloader stays split='test'; the test loop runs once, after training
default_hooks = dict(test_best=dict(type='TestBestCheckpointHook'))
