"""LMCLIPClassifier on the tiny open_clip configs."""
import os

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import numpy as np  # noqa: E402
import open_clip  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from mmpretrain.registry import MODELS  # noqa: E402
from mmpretrain.structures import DataSample  # noqa: E402

import lmclip_mm.models  # noqa: E402,F401
from lmclip_mm.models.classifiers.lmclip_classifier import \
    LMCLIPClassifier  # noqa: E402
from lmclip_mm.models.losses.balanced_asymmetric_loss import \
    BalancedAsymmetricLoss  # noqa: E402
from lmclip_mm.models.losses.clip_contrastive_loss import \
    CLIPContrastiveLoss  # noqa: E402


CLASSES = ('cat', 'dog', 'person', 'car', 'traffic light')
LABELS = [[0, 2], [1], [3, 4], [0], [2, 3], [4], [1, 2], [0, 4]]
CAPTIONS = [
    'a cat and a person', 'a dog', 'a car at a traffic light', 'a cat',
    'a person next to a car', 'a traffic light', 'a dog with a person',
    'a cat under a traffic light'
]
META = dict(
    classes=CLASSES,
    class_counts=[40, 10, 100, 20, 5],
    num_train_images=150,
    head_classes=[2],
    middle_classes=[0, 3],
    tail_classes=[1, 4])


def _model(**kwargs):
    cfg = dict(
        type='LMCLIPClassifier',
        clip=dict(model_name='lmclip-tiny-vit'),
        classes=CLASSES)
    cfg.update(kwargs)
    torch.manual_seed(0)
    return MODELS.build(cfg)


def _batch(n=8, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randint(0, 256, (n, 3, size, size), generator=g,
                           dtype=torch.uint8)
    samples = []
    for label, caption in zip(LABELS[:n], CAPTIONS[:n]):
        ds = DataSample().set_gt_label(label)
        ds.set_field(caption, 'caption')
        samples.append(ds)
    return dict(inputs=inputs, data_samples=samples)


def _reference_logits(model, images):
    """exp(logit_scale) * cos, from open_clip's own full 77-token pass."""
    clip = model.clip
    tokens = open_clip.get_tokenizer('lmclip-tiny-vit')(
        [f'a photo of a {c}' for c in model.classes])
    img = F.normalize(clip.encode_image(images), dim=-1)
    txt = F.normalize(clip.encode_text(tokens), dim=-1)
    return clip.logit_scale.exp() * img @ txt.T


def test_default_data_preprocessor_keeps_captions():
    model = _model()
    pre = model.data_preprocessor
    np.testing.assert_allclose(pre.mean.flatten().tolist(),
                               [123.675, 116.28, 103.53])
    np.testing.assert_allclose(pre.std.flatten().tolist(),
                               [58.395, 57.12, 57.375])
    assert pre.to_rgb
    batch = _batch()
    data = pre(batch, True)
    assert data['inputs'].dtype == torch.float32
    expected = (batch['inputs'].flip(1).float() - pre.mean) / pre.std
    torch.testing.assert_close(data['inputs'], expected)
    assert [ds.caption for ds in data['data_samples']] == CAPTIONS


def test_data_preprocessor_config_is_merged_into_the_default():
    pre = _model(data_preprocessor=dict(num_classes=5)).data_preprocessor
    assert pre.num_classes == 5 and pre.to_rgb
    np.testing.assert_allclose(pre.std.flatten().tolist(),
                               [58.395, 57.12, 57.375])


def test_loss_values_and_keys():
    model = _model(
        loss=dict(type='BalancedAsymmetricLoss', loss_weight=0.3,
                  label_smoothing=0.1))
    data = model.data_preprocessor(_batch(), True)
    losses = model(**data, mode='loss')
    assert set(losses) == {'loss_bal', 'loss_contrastive'}
    images = data['inputs']
    logits = _reference_logits(model, images)
    y = torch.zeros(8, 5)
    for i, label in enumerate(LABELS):
        y[i, label] = 1
    expected_bal = BalancedAsymmetricLoss(
        loss_weight=0.3, label_smoothing=0.1)(logits, y)
    torch.testing.assert_close(losses['loss_bal'], expected_bal)
    tokens = open_clip.get_tokenizer('lmclip-tiny-vit')(CAPTIONS)
    expected_con = CLIPContrastiveLoss()(
        model.clip.encode_image(images), model.clip.encode_text(tokens),
        model.clip.logit_scale.exp())
    torch.testing.assert_close(losses['loss_contrastive'], expected_con)
    # every CLIP parameter gets a gradient, logit_scale included
    sum(losses.values()).backward()
    for name, param in model.clip.named_parameters():
        assert param.grad is not None, name
    assert model.clip.logit_scale.grad.abs() > 0


def test_contrastive_loss_can_be_disabled_and_needs_captions():
    model = _model(contrastive_loss=None)
    batch = _batch()
    for ds in batch['data_samples']:
        del ds.caption
    data = model.data_preprocessor(batch, True)
    assert set(model(**data, mode='loss')) == {'loss_bal'}
    # without captions the contrastive loss uses template captions of the
    # labels (mmpretrain's datasets carry none)
    assert set(_model()(**data, mode='loss')) == {
        'loss_bal', 'loss_contrastive'}
    data['data_samples'][0].set_field(3, 'caption')
    with pytest.raises(ValueError, match='caption'):
        _model()(**data, mode='loss')


def test_trains_tiny_config():
    model = _model()
    optim = torch.optim.AdamW(model.parameters(), lr=1e-3)
    data = model.data_preprocessor(_batch(), True)
    model.train()
    totals = []
    for _ in range(20):
        losses = model(**data, mode='loss')
        total = sum(losses.values())
        optim.zero_grad()
        total.backward()
        optim.step()
        totals.append(total.item())
    assert np.mean(totals[-3:]) < 0.8 * totals[0], totals


def test_predict_and_tensor_modes():
    model = _model().eval()
    data = model.data_preprocessor(_batch(), False)
    with torch.no_grad():
        logits = model(data['inputs'], mode='tensor')
        expected = _reference_logits(model, data['inputs'])
    assert logits.shape == (8, 5)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)

    with torch.no_grad():
        preds = model(**data, mode='predict')
    assert len(preds) == 8
    for pred, label in zip(preds, LABELS):
        assert pred.pred_score.shape == (5, )
        assert pred.gt_label.tolist() == label
    torch.testing.assert_close(
        torch.stack([p.pred_score for p in preds]), logits)

    for activation, fn in (('softmax', lambda x: x.softmax(-1)),
                           ('sigmoid', torch.sigmoid)):
        model.score_activation = activation
        with torch.no_grad():
            scores = torch.stack(
                [p.pred_score for p in model.predict(data['inputs'])])
        torch.testing.assert_close(scores, fn(logits))
        if activation == 'softmax':
            torch.testing.assert_close(scores.sum(-1), torch.ones(8))


def test_logit_scale_trains_and_optional_bound():
    model = _model()
    with torch.no_grad():
        model.clip.logit_scale.fill_(np.log(100.))  # OpenAI's value
    data = model.data_preprocessor(_batch(), True)
    sum(model(**data, mode='loss').values()).backward()
    assert model.clip.logit_scale.grad.abs() > 0
    torch.testing.assert_close(model.logit_scale(),
                               model.clip.logit_scale.exp())

    bounded = _model(logit_scale_max=50.0)
    with torch.no_grad():
        bounded.clip.logit_scale.fill_(np.log(100.))
    assert bounded.logit_scale().item() == 50.0
    images = bounded.data_preprocessor(_batch(), False)['inputs']
    with torch.no_grad():
        torch.testing.assert_close(
            bounded(images), _reference_logits(bounded, images) / 2)


def test_rn_config_and_image_size_error():
    model = _model(clip=dict(model_name='lmclip-tiny-rn')).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 5)
    with pytest.raises(ValueError, match='expects'):
        model(torch.randn(2, 3, 32, 32))


def _count_text_calls(model):
    calls = []
    model.clip.token_embedding.register_forward_hook(
        lambda *args: calls.append(1))
    return calls


def test_eval_text_embedding_cache():
    model = _model()
    calls = _count_text_calls(model)
    data = model.data_preprocessor(_batch(), False)
    model.eval()
    with torch.no_grad():
        first = model(**data, mode='predict')[0].pred_score.clone()
        assert len(calls) == 1
        second = model(**data, mode='predict')[0].pred_score.clone()
        assert len(calls) == 1  # cached: the text tower did not run again
        model(data['inputs'], mode='tensor')
        assert len(calls) == 1
    torch.testing.assert_close(first, second)

    # a train step drops the cache and changes the weights
    model.train()
    optim = torch.optim.SGD(model.parameters(), lr=0.1)
    train_data = model.data_preprocessor(_batch(), True)
    sum(model(**train_data, mode='loss').values()).backward()
    optim.step()
    n_calls = len(calls)
    model.eval()
    with torch.no_grad():
        third = model(**data, mode='predict')[0].pred_score.clone()
    assert len(calls) == n_calls + 1
    assert not torch.allclose(first, third)

    # weights changed in eval mode (no train()) also invalidate it
    with torch.no_grad():
        model.clip.text_projection.mul_(2)
        model(**data, mode='predict')
    assert len(calls) == n_calls + 2
    # and new classes too
    model.set_classes(CLASSES[::-1])
    with torch.no_grad():
        model(**data, mode='predict')
    assert len(calls) == n_calls + 3


def test_training_step_encodes_prompts_and_captions_in_one_pass(
        monkeypatch):
    # Packed: one text-tower call for the class prompts and the captions;
    # the losses equal those of one encode_text per tensor (the fallback
    # for text towers that cannot be packed).
    from lmclip_mm.models.classifiers import lmclip_classifier
    model = _model()
    calls = _count_text_calls(model)
    data = model.data_preprocessor(_batch(), True)
    packed = model(**data, mode='loss')
    assert len(calls) == 1
    monkeypatch.setattr(lmclip_classifier, 'supports_packing',
                        lambda clip: False)
    separate = model(**data, mode='loss')
    assert len(calls) == 3  # prompts, then captions
    for key in ('loss_bal', 'loss_contrastive'):
        torch.testing.assert_close(packed[key], separate[key], rtol=1e-5,
                                   atol=1e-6)


def test_no_cache_with_grad_or_in_training():
    model = _model()
    calls = _count_text_calls(model)
    data = model.data_preprocessor(_batch(), False)
    model.eval()
    model(data['inputs'], mode='tensor')
    model(data['inputs'], mode='tensor')
    assert len(calls) == 2


def test_dataset_meta_sets_classes_and_class_weights():
    model = _model(classes=None, class_weight_power=0.5)
    assert model.classes is None
    with pytest.raises(RuntimeError, match='DatasetMetaHook'):
        model(torch.randn(1, 3, 64, 64))
    model.set_dataset_meta(META)
    assert model.classes == CLASSES
    assert model.class_tokens.shape[0] == 5
    # w_c = r_c^s / max r^s with r_c = N / n_c
    r = np.array([150 / 40, 150 / 10, 150 / 100, 150 / 20, 150 / 5])
    expected = r**0.5 / (r**0.5).max()
    np.testing.assert_allclose(
        model.loss_module.class_weight.numpy(), expected, rtol=1e-6)
    # without the power: no class weights
    plain = _model(classes=None)
    plain.set_dataset_meta(META)
    assert plain.loss_module.class_weight is None
    with pytest.raises(KeyError, match='class_counts'):
        _model(classes=None, class_weight_power=1.0).set_dataset_meta(
            dict(classes=CLASSES))


def test_explicit_classes_win_but_must_match_in_number():
    names = ('kitty', 'puppy', 'human', 'automobile', 'signal')
    model = _model(classes=names)
    model.set_dataset_meta(META)
    assert model.classes == names
    with pytest.raises(ValueError, match='explicit classes'):
        model.set_dataset_meta(dict(classes=CLASSES[:3]))


def test_checkpoint_restores_classes(tmp_path):
    from mmengine.runner import load_checkpoint, save_checkpoint
    model = _model(classes=None, class_weight_power=1.0).eval()
    model.set_dataset_meta(META)
    path = str(tmp_path / 'ckpt.pth')
    save_checkpoint(
        dict(state_dict=model.state_dict(), meta=dict(dataset_meta=META)),
        path)
    fresh = _model(classes=None, class_weight_power=1.0).eval()
    torch.manual_seed(5)
    load_checkpoint(fresh, path, map_location='cpu')
    assert fresh.classes == CLASSES
    torch.testing.assert_close(fresh.loss_module.class_weight,
                               model.loss_module.class_weight)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fresh(images), model(images))


def test_state_dict_holds_tensors_only():
    """Every state-dict value is a tensor (DDP broadcasts each one, EMA
    averages them, mmengine's tracer feeds them as inputs); the class names
    and the prompt template sit in the module's ``_metadata`` entry."""
    for model in (_model(classes=None), _model(class_weight_power=1.0)):
        state = model.state_dict()
        bad = {k: type(v).__name__ for k, v in state.items()
               if not torch.is_tensor(v)}
        assert not bad, bad
        meta = state._metadata['']
        assert meta[LMCLIPClassifier.METADATA_TEMPLATE] == 'a photo of a {}'
        if model.classes is None:
            assert LMCLIPClassifier.METADATA_CLASSES not in meta
        else:
            assert meta[LMCLIPClassifier.METADATA_CLASSES] == list(CLASSES)
    # mmengine's own get_state_dict (used by its checkpoint tools) agrees
    from mmengine.runner.checkpoint import get_state_dict, weights_to_cpu
    state = weights_to_cpu(get_state_dict(_model()))
    assert all(torch.is_tensor(v) for v in state.values())
    assert state._metadata[''][LMCLIPClassifier.METADATA_CLASSES] == \
        list(CLASSES)


def test_bare_state_dict_round_trip_restores_classes():
    model = _model(classes=None)
    model.set_classes(CLASSES[::-1])
    fresh = _model(classes=None)
    fresh.load_state_dict(model.state_dict(), strict=True)
    assert fresh.classes == CLASSES[::-1]


def test_legacy_extra_state_checkpoint_loads(tmp_path):
    """A checkpoint of lmclip_mm 0.1.0 keeps the classes in a non-tensor
    ``_extra_state`` entry: it still loads (strictly, weights-only), sets
    the classes once and the entry is gone from the model's state dict."""
    from mmengine.runner import load_checkpoint, save_checkpoint
    model = _model(classes=None)
    model.set_classes(CLASSES)
    state = model.state_dict()
    state.pop('_extra_state', None)
    old = type(state)()  # what the 0.1.0 release wrote: no _metadata
    old.update(state)
    old['_extra_state'] = dict(classes=list(CLASSES),
                               prompt_template='a photo of a {}')
    path = str(tmp_path / 'v010.pth')
    save_checkpoint(dict(state_dict=old, meta=dict()), path)
    fresh = _model(classes=None).eval()
    with warnings_as_errors():
        load_checkpoint(fresh, path, map_location='cpu', strict=True)
    assert fresh.classes == CLASSES
    assert '_extra_state' not in fresh.state_dict()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fresh(images), model.eval()(images))
    # an old file trained with another prompt template says so
    old['_extra_state']['prompt_template'] = 'a picture of {}'
    save_checkpoint(dict(state_dict=old, meta=dict()), path)
    with pytest.warns(UserWarning, match='a picture of'):
        load_checkpoint(_model(classes=None), path, map_location='cpu')


class warnings_as_errors:
    def __enter__(self):
        import warnings
        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter('error', UserWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def test_mmpretrain_get_model_and_inferencer_use_checkpoint_classes(
        tmp_path):
    """``mmpretrain.get_model(cfg, pretrained=ckpt)`` and
    ``ImageClassificationInferencer`` take the class names of a checkpoint
    (its ``meta['dataset_meta']``) with no dataset."""
    from mmengine.config import Config
    from mmengine.runner import save_checkpoint
    from mmpretrain.apis import ImageClassificationInferencer, get_model
    trained = _model(classes=None)
    trained.set_dataset_meta(META)
    path = str(tmp_path / 'ckpt.pth')
    save_checkpoint(dict(state_dict=trained.state_dict(),
                         meta=dict(dataset_meta=META)), path)
    cfg = Config(dict(model=dict(
        type='LMCLIPClassifier', clip=dict(model_name='lmclip-tiny-vit')),
        default_scope='mmpretrain'))
    model = get_model(cfg, pretrained=path)
    assert model.classes == CLASSES
    assert model._dataset_meta['classes'] == list(CLASSES)
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3),
                                              dtype=np.uint8)
    cfg.test_dataloader = dict(dataset=dict(pipeline=[
        dict(type='PackInputs')]))
    inferencer = ImageClassificationInferencer(cfg, pretrained=path)
    assert list(inferencer.classes) == list(CLASSES)
    result = inferencer(image)[0]
    assert result['pred_class'] in CLASSES
    assert len(result['pred_scores']) == len(CLASSES)


def test_bad_arguments():
    with pytest.raises(ValueError, match='Unknown open_clip model'):
        _model(clip=dict(model_name='no-such-model'))
    with pytest.raises(FileNotFoundError, match='missing.pt'):
        _model(clip=dict(model_name='lmclip-tiny-vit',
                         pretrained='/nonexistent/missing.pt'))
    with pytest.raises(ValueError, match='score_activation'):
        _model(score_activation='relu')
    with pytest.raises(ValueError, match='gt_label'):
        model = _model(contrastive_loss=None)
        batch = _batch(n=1)
        batch['data_samples'][0].set_gt_label([7])
        model(**model.data_preprocessor(batch, True), mode='loss')


def test_pretrained_weights_file(tmp_path):
    source = _model()
    path = str(tmp_path / 'tiny.pt')
    torch.save(source.clip.state_dict(), path)
    torch.manual_seed(9)
    model = LMCLIPClassifier(
        clip=dict(model_name='lmclip-tiny-vit', pretrained=path),
        classes=CLASSES)

    def same():
        return all(torch.equal(a, b) for a, b in zip(
            source.clip.state_dict().values(),
            model.clip.state_dict().values()))

    # built for the weights, loaded by init_weights (once), as MMPretrain's
    # pretrained backbones
    assert model.clip_weights_pending and not same()
    model.init_weights()
    assert same() and not model.clip_weights_pending
    torch.nn.init.zeros_(model.clip.logit_scale)
    model.init_weights()  # a second call loads nothing
    assert model.clip.logit_scale.item() == 0


def test_head_entries_keep_their_checkpoint_keys(tmp_path):
    """The losses and the class thresholds live in ``model.head``, but the
    state dict keeps the keys (and ``_metadata`` entries) they had before
    the head existed: old checkpoints load strictly, new ones are alike."""
    model = _model(class_weight_power=0.5)
    model.set_dataset_meta(META)
    model.set_class_thresholds([0.1, 0.2, 0.3, 0.4, 0.5])
    assert model.head.loss_module.class_weight is not None
    state = model.state_dict()
    assert not [k for k in state if k.startswith('head.')]
    assert [k for k in state if not k.startswith('clip.')] == [
        'class_thresholds', 'loss_module.class_weight']
    assert list(state)[0] == 'class_thresholds'  # where it always was
    assert 'head' not in state._metadata
    assert {'loss_module', 'contrastive_loss'} <= set(state._metadata)
    # strict round trip, bare and through a parent module (DDP's prefix)
    fresh = _model(classes=None, class_weight_power=0.5)
    fresh.load_state_dict(state, strict=True)
    torch.testing.assert_close(fresh.head.class_thresholds,
                               model.head.class_thresholds)
    torch.testing.assert_close(fresh.head.loss_module.class_weight,
                               model.head.loss_module.class_weight)
    wrapper = torch.nn.Module()
    wrapper.module = model
    wrapped = wrapper.state_dict()
    assert set(wrapped) == {'module.' + k for k in state}
    other = torch.nn.Module()
    other.module = _model(classes=None, class_weight_power=0.5)
    other.load_state_dict(wrapped, strict=True)
    torch.testing.assert_close(other.module.class_thresholds,
                               model.class_thresholds)
    # mmengine's loader, into a model with neither yet: adopted
    from mmengine.runner import load_checkpoint, save_checkpoint
    path = str(tmp_path / 'ckpt.pth')
    save_checkpoint(dict(state_dict=state, meta=dict()), path)
    plain = _model()
    load_checkpoint(plain, path, map_location='cpu', strict=True)
    torch.testing.assert_close(plain.loss_module.class_weight,
                               model.loss_module.class_weight)
    torch.testing.assert_close(plain.class_thresholds,
                               model.class_thresholds)


def test_head_attributes_read_and_set_through_the_classifier():
    model = _model(thr=0.3, score_activation='softmax')
    head = model.head
    assert (model.thr, model.topk, model.score_activation) == \
        (0.3, None, 'softmax')
    assert model.loss_module is head.loss_module
    assert model.contrastive_loss is head.contrastive_loss
    model.thr = 0.2
    assert head.thr == 0.2
    new_loss = BalancedAsymmetricLoss(loss_weight=2.)
    model.loss_module = new_loss
    assert head.loss_module is new_loss and model.loss_module is new_loss
    assert 'loss_module' not in model._modules  # not registered twice
    model.contrastive_loss = None
    data = model.data_preprocessor(_batch(), True)
    assert set(model(**data, mode='loss')) == {'loss_bal'}
    model.class_thresholds = torch.full((5, ), 0.5)
    assert torch.equal(head.class_thresholds, torch.full((5, ), 0.5))


def test_loss_publishes_the_train_logits_only_when_asked():
    """What TrainMAPHook reads: ``last_train_logits``, the logits and
    targets the loss saw, published while ``keep_train_logits`` is on."""
    model = _model()
    seen = []
    original = model.loss_module.forward

    def spy(logits, target, *args, **kwargs):
        seen.append((logits.detach().clone(), target.clone()))
        return original(logits, target, *args, **kwargs)

    model.loss_module.forward = spy
    data = model.data_preprocessor(_batch(), True)
    assert model.keep_train_logits is False
    assert model.last_train_logits is None
    model(**data, mode='loss')
    assert model.last_train_logits is None
    model.keep_train_logits = True
    model(**data, mode='loss')
    logits, target = model.last_train_logits
    assert not logits.requires_grad and logits.dtype == torch.float32
    assert logits.device.type == 'cpu' and target.device.type == 'cpu'
    torch.testing.assert_close(logits, seen[-1][0])
    torch.testing.assert_close(target, seen[-1][1])
    assert '_last_train_logits' not in vars(model)  # no hidden channel
