# LM-CLIP: a CLIP model (open_clip) fully fine-tuned with the Balanced
# Asymmetric Loss on its class prompts plus CLIP's contrastive loss. The
# backbone files set `clip.model_name`; the loss settings are set per config.
# `clip.pretrained`: 'openai' (downloaded once by open_clip) or the path of
# a local weights file (OpenAI's .pt, or an open_clip state dict).
model = dict(
    type='LMCLIPClassifier',
    clip=dict(pretrained='openai'),
    # class prompts; the class names come from the dataset's labels file
    prompt_template='a photo of a {}',
    # on exp(logit_scale) * cos(image, prompt); loss_weight is the paper's
    # lambda
    loss=dict(
        type='BalancedAsymmetricLoss',
        gamma_pos=0.0,
        gamma_neg=4.0,
        clip=0.05,
        label_smoothing=0.0,
        loss_weight=1.0),
    # CLIP's InfoNCE between the images and their captions
    contrastive_loss=dict(type='CLIPContrastiveLoss'),
    # loss class weights r_c**s / max(r**s) from the train split's counts;
    # s is the sampler's power
    class_weight_power=1.0,
    # ImageNet mean/std, as the paper
    data_preprocessor=dict(
        type='ClsDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True),
)
