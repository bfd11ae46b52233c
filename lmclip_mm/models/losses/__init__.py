# Copyright (c) lmclip_mm authors.
from .balanced_asymmetric_loss import BalancedAsymmetricLoss
from .clip_contrastive_loss import CLIPContrastiveLoss

__all__ = ['BalancedAsymmetricLoss', 'CLIPContrastiveLoss']
