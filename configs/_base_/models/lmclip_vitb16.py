# LM-CLIP on OpenAI's CLIP ViT-B/16.
_base_ = ['./lmclip.py']
model = dict(clip=dict(model_name='ViT-B-16'))
