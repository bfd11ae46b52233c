# LM-CLIP on OpenAI's CLIP ViT-B/16 (open_clip), full fine-tuning.
# `clip.pretrained` may be 'openai' (downloaded once by open_clip into its
# cache) or the path of a local weights file (OpenAI's ViT-B-16.pt, or an
# open_clip state dict). The loss settings are set per config.
model = dict(
    type='LMCLIPClassifier',
    clip=dict(model_name='ViT-B-16', pretrained='openai'),
    # Class prompts; the class names come from the dataset's labels file.
    prompt_template='a photo of a {}',
    # BalancedAsymmetricLoss on exp(logit_scale) * cos(image, prompt);
    # loss_weight is the paper's lambda.
    loss=dict(
        type='BalancedAsymmetricLoss',
        gamma_pos=0.0,
        gamma_neg=4.0,
        clip=0.05,
        label_smoothing=0.0,
        loss_weight=1.0),
    # CLIP InfoNCE between images and their captions.
    contrastive_loss=dict(type='CLIPContrastiveLoss'),
    # Loss class weights r_c**s / max(r**s) from the train split's counts;
    # s is the same power as the sampler's.
    class_weight_power=1.0,
    # ImageNet mean/std, as the paper.
    data_preprocessor=dict(
        type='ClsDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True),
)
