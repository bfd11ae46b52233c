# LM-CLIP on OpenAI's CLIP RN50.
_base_ = ['./lmclip.py']
model = dict(clip=dict(model_name='RN50'))
