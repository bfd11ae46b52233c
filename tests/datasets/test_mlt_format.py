"""The list-file readers: valid files and every malformed-input case."""
import pytest

from lmclip_mm.datasets.mlt_format import (DatasetFileNotFoundError,
                                           DatasetFormatError, ImageRecord,
                                           find_bad_images,
                                           parse_captions_file,
                                           parse_labels_file,
                                           parse_split_file)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_bytes(text.encode('utf-8') if isinstance(text, str) else text)
    return str(path)


# ----------------------------------------------------------- labels file
def test_labels_crlf_trailing_spaces_names_with_spaces_unsorted(tmp_path):
    f = write(tmp_path, 'labels.txt',
              'traffic light 2\r\nperson 0 \r\n\r\nbicycle   1\r\n')
    assert parse_labels_file(f) == ('person', 'bicycle', 'traffic light')


def test_labels_utf8_bom_is_ignored(tmp_path):
    f = write(tmp_path, 'labels.txt', '\ufeffcat 0\ndog 1\n')
    assert parse_labels_file(f) == ('cat', 'dog')


@pytest.mark.parametrize('text, line_no, problem', [
    ('cat 0\ndog\n', 2, 'expected 2 fields'),
    ('cat 0\ndog one\n', 2, "class id 'one' is not an integer"),
    ('cat 0\ndog 1.0\n', 2, 'is not an integer'),
    ('cat 0\ndog 1\ncat 2\n', 3, "duplicate class name 'cat'"),
    ('cat 0\ndog 0\n', 2, 'duplicate class id 0'),
    ('cat 0\ndog 5\nbird 1\n', 2, 'class id 5 out of range'),
    ('cat 1\ndog 2\n', 2, 'class id 2 out of range'),
    ('cat 0\ndog -1\n', 2, 'class id -1 out of range'),
    ('cat 0\n 1\n', 2, 'empty class name'),
])
def test_labels_malformed(tmp_path, text, line_no, problem):
    f = write(tmp_path, 'my_labels.txt', text)
    with pytest.raises(DatasetFormatError) as e:
        parse_labels_file(f)
    assert f'{f}, line {line_no}' in str(e.value)
    assert problem in str(e.value)


def test_labels_empty_file(tmp_path):
    f = write(tmp_path, 'my_labels.txt', '\n\n')
    with pytest.raises(DatasetFormatError, match='defines no class') as e:
        parse_labels_file(f)
    assert f in str(e.value)


def test_labels_missing_file(tmp_path):
    f = str(tmp_path / 'nope_labels.txt')
    with pytest.raises(FileNotFoundError) as e:
        parse_labels_file(f)
    assert isinstance(e.value, DatasetFileNotFoundError)
    assert isinstance(e.value, ValueError)  # one family for all data errors
    assert f in str(e.value) and 'does not exist' in str(e.value)


def test_labels_is_a_directory(tmp_path):
    with pytest.raises(DatasetFileNotFoundError, match='not a regular file'):
        parse_labels_file(str(tmp_path))


def test_not_utf8_names_the_line(tmp_path):
    f = write(tmp_path, 'labels.txt', b'cat 0\ndog 1\nb\xffrd 2\n')
    with pytest.raises(DatasetFormatError) as e:
        parse_labels_file(f)
    assert f'{f}, line 3' in str(e.value) and 'UTF-8' in str(e.value)


# ------------------------------------------------------------ split files
def test_split_valid_keeps_order_and_line_numbers(tmp_path):
    f = write(tmp_path, 'train.txt', 'a/x.jpg 2 0 \n\nb/y.jpg 1\r\n')
    assert parse_split_file(f, 3) == [
        ImageRecord(1, 'a/x.jpg', (2, 0)),
        ImageRecord(3, 'b/y.jpg', (1, )),
    ]


def test_split_unlabeled_line_allowed_only_when_asked(tmp_path):
    f = write(tmp_path, 'test.txt', 'a.jpg 0\nb.jpg\nc.jpg   \n')
    records = parse_split_file(f, 1, allow_unlabeled=True)
    assert [r.labels for r in records] == [(0, ), (), ()]
    with pytest.raises(DatasetFormatError) as e:
        parse_split_file(f, 1, allow_unlabeled=False)
    assert f'{f}, line 2' in str(e.value) and 'has no class id' in str(
        e.value)


@pytest.mark.parametrize('text, line_no, problem', [
    ('a.jpg 0\nb.jpg x\n', 2, "class id 'x' is not an integer"),
    ('a.jpg 0\nb.jpg 1,2\n', 2, 'is not an integer'),
    ('a.jpg 0\nb.jpg 3\n', 2, 'class id 3 out of range 0..2'),
    ('a.jpg 0\nb.jpg -1\n', 2, 'class id -1 out of range'),
    ('a.jpg 0\n 1 2\n', 2, 'empty image path'),
    ('a.jpg 0\nb.jpg 1\n./a.jpg 2\n', 3, 'duplicate image ./a.jpg'),
    ('a.jpg 0\nb.jpg 1 1\n', 2, 'class id 1 repeated'),
])
def test_split_malformed(tmp_path, text, line_no, problem):
    f = write(tmp_path, 'my_lt_train.txt', text)
    with pytest.raises(DatasetFormatError) as e:
        parse_split_file(f, 3, allow_unlabeled=True)
    assert f'{f}, line {line_no}' in str(e.value)
    assert problem in str(e.value)


def test_duplicate_image_names_first_line(tmp_path):
    f = write(tmp_path, 'train.txt', 'a.jpg 0\nb.jpg 0\na.jpg 1\n')
    with pytest.raises(DatasetFormatError,
                       match='already listed on line 1'):
        parse_split_file(f, 2)


# ---------------------------------------------------------- captions file
def test_captions_valid(tmp_path):
    f = write(tmp_path, 'captions.txt',
              'a.jpg  A photo,  of  things. \r\nb.jpg x\n')
    assert parse_captions_file(f) == {
        'a.jpg': (1, 'A photo,  of  things.'),
        'b.jpg': (2, 'x'),
    }


@pytest.mark.parametrize('text, line_no, problem', [
    ('a.jpg a cat\nb.jpg\n', 2, 'has no caption text'),
    ('a.jpg a cat\na.jpg a dog\n', 2, 'duplicate caption for image a.jpg'),
    ('a.jpg a cat\n b.jpg a dog\n', 2, 'empty image path'),
])
def test_captions_malformed(tmp_path, text, line_no, problem):
    f = write(tmp_path, 'caps.txt', text)
    with pytest.raises(DatasetFormatError) as e:
        parse_captions_file(f)
    assert f'{f}, line {line_no}' in str(e.value)
    assert problem in str(e.value)


# ----------------------------------------------------------------- helpers
def test_find_bad_images(tmp_path):
    import io

    from PIL import Image
    buf = io.BytesIO()
    Image.new('RGB', (16, 16), (10, 200, 30)).save(buf, 'JPEG')
    jpeg = buf.getvalue()
    good = tmp_path / 'good.jpg'
    good.write_bytes(jpeg)
    png = tmp_path / 'good.png'
    Image.new('RGB', (4, 4)).save(png)
    empty = tmp_path / 'empty.jpg'
    empty.write_bytes(b'')
    cut = tmp_path / 'cut.jpg'
    cut.write_bytes(jpeg[:len(jpeg) // 2])
    cut_png = tmp_path / 'cut.png'
    cut_png.write_bytes(png.read_bytes()[:-12])
    html = tmp_path / 'error_page.jpg'
    html.write_bytes(b'<html><body>404</body></html>')
    bad = find_bad_images([(1, str(good)), (2, str(tmp_path / 'gone.jpg')),
                           (3, str(empty)), (4, str(tmp_path)),
                           (5, str(cut)), (6, str(png)), (7, str(cut_png)),
                           (8, str(html))])
    assert bad == [(2, str(tmp_path / 'gone.jpg'), 'missing'),
                   (3, str(empty), 'empty file'),
                   (4, str(tmp_path), 'not a regular file'),
                   (5, str(cut), 'truncated JPEG (no end marker)'),
                   (7, str(cut_png), 'truncated PNG (no end marker)'),
                   (8, str(html), 'not an image (unknown file signature)')]


def test_bad_images_error_messages():
    """Grammar, missing vs damaged, advice for own data and benchmarks
    (issue 15, item 10)."""
    from lmclip_mm.datasets.mlt_format import (DatasetFileNotFoundError,
                                               DatasetFormatError,
                                               bad_images_error)
    err = bad_images_error('d/my_train.txt', [(3, 'd/a.jpg', 'missing')],
                           140, 'd/')
    assert type(err) is DatasetFileNotFoundError
    assert str(err) == (
        "d/my_train.txt: 1 of the 140 images it lists is missing:\n"
        "  line 3: d/a.jpg (missing)\n"
        "image paths in my_train.txt are relative to 'd/': check that root "
        "(data_root / data_prefix) and that the files are there. For VOC-MLT "
        "/ COCO-MLT, bash data/download_voc_mlt.sh / "
        "data/download_coco_mlt.sh fetches (and resumes) the images; see "
        "data/README.md.")
    assert 'check_images=False' not in str(err)
    # a truncated JPEG exists: damaged, not "not found"
    err = bad_images_error('t.txt', [(1, 'a.jpg', 'truncated JPEG (no end '
                                      'marker)'), (2, 'b.jpg', 'empty file')],
                           5, 'r/')
    assert type(err) is DatasetFormatError
    assert not isinstance(err, FileNotFoundError)
    assert str(err).startswith(
        't.txt: 2 of the 5 images it lists are damaged (truncated, empty or '
        'not an image):\n  line 1: a.jpg (truncated JPEG (no end marker))')
    assert 'replace the damaged files' in str(err)
    assert 'relative to' not in str(err)
    # both kinds; all of them; the only one; a long list; a hint
    err = bad_images_error('t.txt', [(1, 'a', 'missing'),
                                     (2, 'b', 'not an image (unknown file '
                                      'signature)')], 2, 'r/',
                           download_hint='run x.sh')
    assert type(err) is DatasetFormatError
    assert str(err).startswith(
        't.txt: all 2 images it lists are bad: 1 missing and 1 damaged')
    assert str(err).endswith('files are there; replace the damaged files '
                             '(an interrupted copy or download leaves them '
                             'truncated). Run x.sh.')
    err = bad_images_error('t.txt', [(1, 'a', 'missing')], 1, 'r/')
    assert str(err).startswith('t.txt: the only image it lists is missing:')
    bad = [(i, f'{i}.jpg', 'missing') for i in range(1, 26)]
    err = bad_images_error('t.txt', bad, 100, 'r/', max_listed=20)
    assert '25 of the 100 images it lists are missing' in str(err)
    assert '  line 20: 20.jpg' in str(err) and 'line 21' not in str(err)
    assert '  ... and 5 more' in str(err)
