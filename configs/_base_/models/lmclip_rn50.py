# LM-CLIP on OpenAI's CLIP RN50 (open_clip); see lmclip_vitb16.py.
_base_ = ['./lmclip_vitb16.py']
model = dict(clip=dict(model_name='RN50', pretrained='openai'))
