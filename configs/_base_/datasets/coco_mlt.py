# COCO-MLT (Wu et al. 2020 long-tailed split of MS-COCO): 1,909 train
# images from COCO2017 train, 5,000 test images from COCO2017 val, 80
# classes. Same pipelines and loaders as VOC-MLT; see data/README.md for the
# layout under data_root.
_base_ = ['./voc_mlt.py']

dataset_type = 'COCOMLT'
data_root = 'data/coco_mlt/'

train_dataloader = dict(dataset=dict(type=dataset_type, data_root=data_root))
val_dataloader = dict(dataset=dict(type=dataset_type, data_root=data_root))
test_dataloader = val_dataloader
