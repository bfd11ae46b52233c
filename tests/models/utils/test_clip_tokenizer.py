"""create_tokenizer: open_clip's tokenizer, or one clear error when it needs
a package that is missing or hub files that cannot be fetched."""
import open_clip
import pytest

from lmclip_mm.models.utils import ClipDependencyError, create_tokenizer


def test_the_tiny_models_tokenizer_is_open_clips():
    ours = create_tokenizer('lmclip-tiny-vit')(['a photo of a dog'])
    theirs = open_clip.get_tokenizer('lmclip-tiny-vit')(['a photo of a dog'])
    assert ours.equal(theirs)


def test_a_missing_package_is_named_with_its_install_command(monkeypatch):
    def get_tokenizer(name, context_length=None):
        raise ImportError("No module named 'transformers'",
                          name='transformers')

    monkeypatch.setattr(open_clip, 'get_tokenizer', get_tokenizer)
    with pytest.raises(ClipDependencyError) as err:
        create_tokenizer('ViT-B-16-SigLIP')
    assert str(err.value) == (
        "the tokenizer of ViT-B-16-SigLIP needs the package 'transformers', "
        'which is not installed: pip install transformers')


def test_hub_files_unreachable_offline_is_one_line(monkeypatch):
    def get_tokenizer(name, context_length=None):
        raise OSError("We couldn't connect to 'https://huggingface.co' to "
                      'load the files\nCheck your connection')

    monkeypatch.setattr(open_clip, 'get_tokenizer', get_tokenizer)
    with pytest.raises(ClipDependencyError) as err:
        create_tokenizer('ViT-B-16-SigLIP')
    message = str(err.value)
    assert '\n' not in message
    assert message.startswith('the tokenizer of ViT-B-16-SigLIP could not be '
                              "loaded (OSError: We couldn't connect")
    assert message.endswith('run once with network access')
