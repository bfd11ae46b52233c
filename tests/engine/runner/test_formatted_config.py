"""FormattedConfig: mmengine's pretty_text byte for byte, yapf once per
distinct text, never a stale text."""
import threading

import pytest
from mmengine.config import Config
from mmengine.config import config as mmengine_config

from lmclip_mm.engine.runner import FormattedConfig
from lmclip_mm.engine.runner.formatted_config import format_python_text
from lmclip_testing import CONFIGS


@pytest.fixture
def yapf_calls(monkeypatch):
    calls = []
    real = mmengine_config.FormatCode

    def counted(text, **kwargs):
        calls.append(text)
        return real(text, **kwargs)

    format_python_text.cache_clear()
    monkeypatch.setattr(mmengine_config, 'FormatCode', counted)
    yield calls
    format_python_text.cache_clear()


@pytest.mark.parametrize('name', [
    'lmclip_toy_mlt_tiny.py', 'lmclip_coco_mlt_vitb16_honest.py',
    'lmclip_voc_mlt_rn50.py', 'examples/resnet_bal_own_list_files.py'])
def test_the_text_is_mmengines(name, yapf_calls):
    cfg = Config.fromfile(str(CONFIGS / name))
    expected = cfg.pretty_text
    ours = FormattedConfig.of(cfg)
    assert type(ours) is FormattedConfig and type(cfg) is Config
    del yapf_calls[:]
    assert ours.pretty_text == expected
    assert ours.pretty_text == expected
    assert len(yapf_calls) == 1  # formatted once
    # the copy is independent of the config it was made from
    ours.train_dataloader.batch_size = 3
    assert cfg.pretty_text == expected


def test_a_changed_config_is_formatted_anew(yapf_calls):
    cfg = FormattedConfig.of(
        Config.fromfile(str(CONFIGS / 'lmclip_toy_mlt_tiny.py')))
    before = cfg.pretty_text
    cfg.model.loss.loss_weight = 1
    after = cfg.pretty_text
    assert 'loss_weight=1,' in after and after != before
    plain = Config(cfg.to_dict())
    assert after == plain.pretty_text
    cfg.model.loss.loss_weight = 1.0  # equal value, another text
    assert 'loss_weight=1.0,' in cfg.pretty_text
    assert len(yapf_calls) == 4  # before, after, plain's, 1.0


def test_threads_read_one_text(yapf_calls):
    cfg = FormattedConfig.of(
        Config.fromfile(str(CONFIGS / 'lmclip_toy_mlt_tiny.py')))
    expected = Config(cfg.to_dict()).pretty_text
    texts = []
    threads = [threading.Thread(target=lambda: texts.append(cfg.pretty_text))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert texts == [expected] * 8


def test_unformatted_configs_stay_unformatted():
    cfg = Config(dict(a=1), format_python_code=False)
    assert FormattedConfig.of(cfg).pretty_text == cfg.pretty_text
