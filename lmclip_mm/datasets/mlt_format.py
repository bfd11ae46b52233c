"""Readers for the long-tailed multi-label list files (LMPT / LM-CLIP format).

The format (Wu et al. 2020 splits as distributed by LMPT and LM-CLIP):

* labels file (``*_labels.txt``), one class per line: ``name id``. The name
  may contain spaces (``traffic light 9``); the id is the last field. Ids are
  0-based and must be ``0 .. C-1``, each exactly once.
* split file (``*_lt_train.txt`` / ``*_lt_test.txt``), one image per line:
  ``relative/image/path id id ...``. A line may carry no id at all (COCO-MLT
  has 48 such test lines); whether that is allowed is the caller's decision.
* captions file (``*_lt_captions.txt``), one image per line:
  ``relative/image/path caption text``.

Lines end with ``\\n`` or ``\\r\\n``; trailing spaces are ignored. Lines that
are entirely blank carry no record and are ignored; every other line must be
well formed. Every problem raises :class:`DatasetFormatError` (a
``ValueError``) or :class:`DatasetFileNotFoundError` (also a
``FileNotFoundError``) whose message names the file, the line number and the
problem. Nothing is silently dropped.

These readers only read text: no file is ever unpickled.
"""
import os
import os.path as osp
import re
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

_INT = re.compile(r'[+-]?[0-9]+')

#: how many bad images one error message lists
MAX_LISTED_BAD_IMAGES = 20


class DatasetFormatError(ValueError):
    """A dataset file is malformed or inconsistent."""


class DatasetFileNotFoundError(DatasetFormatError, FileNotFoundError):
    """A dataset file (list file or image) is missing or unreadable."""


class ImageRecord(NamedTuple):
    """One line of a split file."""
    line_no: int
    path: str
    labels: Tuple[int, ...]


def _where(file: str, line_no: Optional[int] = None) -> str:
    return f'{file}, line {line_no}' if line_no is not None else str(file)


def read_lines(file: str, what: str = 'file') -> List[Tuple[int, str]]:
    """``(line_no, line)`` for every non-blank line, trailing space removed.

    Raises:
        DatasetFileNotFoundError: the file is missing or not a regular file.
        DatasetFormatError: the file is not UTF-8 text.
    """
    file = str(file)
    if not osp.exists(file):
        raise DatasetFileNotFoundError(f'{what} {file} does not exist')
    if not osp.isfile(file):
        raise DatasetFileNotFoundError(f'{what} {file} is not a regular file')
    with open(file, 'rb') as f:
        data = f.read()
    try:
        text = data.decode('utf-8')
    except UnicodeDecodeError as e:
        line_no = data.count(b'\n', 0, e.start) + 1
        raise DatasetFormatError(
            f'{_where(file, line_no)}: {what} is not valid UTF-8 text '
            f'({e.reason} at byte {e.start})') from None
    if text.startswith('\ufeff'):  # a UTF-8 byte-order mark
        text = text[1:]
    lines = []
    for line_no, line in enumerate(text.split('\n'), start=1):
        line = line.rstrip()  # also drops the '\r' of CRLF files
        if line:
            lines.append((line_no, line))
    return lines


def _parse_int(token: str, file: str, line_no: int, what: str) -> int:
    if not _INT.fullmatch(token):
        raise DatasetFormatError(
            f'{_where(file, line_no)}: {what} {token!r} is not an integer')
    return int(token)


def parse_labels_file(file: str) -> Tuple[str, ...]:
    """Read a labels file; return the class names ordered by id.

    Raises:
        DatasetFormatError: a line without ``name id``, a non-integer id, a
            duplicate name or id, ids that are not ``0 .. C-1``, or no class.
    """
    file = str(file)
    names: Dict[int, str] = {}
    id_line: Dict[int, int] = {}
    name_line: Dict[str, int] = {}
    for line_no, line in read_lines(file, 'labels file'):
        if line[0].isspace():
            raise DatasetFormatError(
                f'{_where(file, line_no)}: empty class name (expected '
                f"'name id', got {line!r})")
        fields = line.rsplit(None, 1)
        if len(fields) != 2:
            raise DatasetFormatError(
                f'{_where(file, line_no)}: expected 2 fields '
                f"'name id', got {len(fields)} ({line!r})")
        name, token = fields[0].strip(), fields[1]
        class_id = _parse_int(token, file, line_no, 'class id')
        if class_id in id_line:
            raise DatasetFormatError(
                f'{_where(file, line_no)}: duplicate class id {class_id} '
                f'(already given on line {id_line[class_id]})')
        if name in name_line:
            raise DatasetFormatError(
                f'{_where(file, line_no)}: duplicate class name {name!r} '
                f'(already given on line {name_line[name]})')
        names[class_id] = name
        id_line[class_id] = line_no
        name_line[name] = line_no
    if not names:
        raise DatasetFormatError(f'{file}: labels file defines no class')
    num_classes = len(names)
    for class_id, line_no in sorted(id_line.items(), key=lambda kv: kv[1]):
        if not 0 <= class_id < num_classes:
            raise DatasetFormatError(
                f'{_where(file, line_no)}: class id {class_id} out of range: '
                f'the file defines {num_classes} classes, so the ids must be '
                f'0..{num_classes - 1}, each once')
    return tuple(names[i] for i in range(num_classes))


def parse_split_file(file: str,
                     num_classes: int,
                     allow_unlabeled: bool = False) -> List[ImageRecord]:
    """Read a split file (``path id id ...`` per line).

    Args:
        file: the split file.
        num_classes: ids must lie in ``0 .. num_classes-1``.
        allow_unlabeled: whether a line may carry no class id (test splits).

    Raises:
        DatasetFormatError: an empty path, a non-integer or out-of-range id,
            an id repeated on one line, a line without id when
            ``allow_unlabeled`` is False, or an image listed twice.
    """
    file = str(file)
    records = []
    seen: Dict[str, int] = {}
    for line_no, line in read_lines(file, 'split file'):
        if line[0].isspace():
            raise DatasetFormatError(
                f'{_where(file, line_no)}: empty image path (the line starts '
                f'with whitespace: {line!r})')
        path, *tokens = line.split()
        labels = []
        for token in tokens:
            class_id = _parse_int(token, file, line_no, 'class id')
            if not 0 <= class_id < num_classes:
                raise DatasetFormatError(
                    f'{_where(file, line_no)}: class id {class_id} out of '
                    f'range 0..{num_classes - 1} (image {path})')
            if class_id in labels:
                raise DatasetFormatError(
                    f'{_where(file, line_no)}: class id {class_id} repeated '
                    f'(image {path})')
            labels.append(class_id)
        if not labels and not allow_unlabeled:
            raise DatasetFormatError(
                f'{_where(file, line_no)}: image {path} has no class id '
                '(every training image needs at least one label)')
        key = osp.normpath(path)
        if key in seen:
            raise DatasetFormatError(
                f'{_where(file, line_no)}: duplicate image {path} (already '
                f'listed on line {seen[key]})')
        seen[key] = line_no
        records.append(ImageRecord(line_no, path, tuple(labels)))
    return records


def parse_captions_file(file: str) -> Dict[str, Tuple[int, str]]:
    """Read a captions file; map ``normpath(path)`` to ``(line_no, caption)``.

    Raises:
        DatasetFormatError: an empty path, a line without caption text or an
            image captioned twice.
    """
    file = str(file)
    captions: Dict[str, Tuple[int, str]] = {}
    for line_no, line in read_lines(file, 'captions file'):
        if line[0].isspace():
            raise DatasetFormatError(
                f'{_where(file, line_no)}: empty image path (the line starts '
                f'with whitespace: {line!r})')
        fields = line.split(None, 1)
        if len(fields) != 2:
            raise DatasetFormatError(
                f'{_where(file, line_no)}: image {fields[0]} has no caption '
                "text (expected 'path caption')")
        path, caption = fields[0], fields[1].strip()
        key = osp.normpath(path)
        if key in captions:
            raise DatasetFormatError(
                f'{_where(file, line_no)}: duplicate caption for image {path} '
                f'(already given on line {captions[key][0]})')
        captions[key] = (line_no, caption)
    return captions


#: Leading bytes of the image formats mmcv decodes, and for the formats that
#: have one, a marker that must be in the file's last bytes (a file cut
#: short by an interrupted download lacks it).
_IMAGE_SIGNATURES = (
    (b'\xff\xd8\xff', 'JPEG', b'\xff\xd9'),
    (b'\x89PNG\r\n\x1a\n', 'PNG', b'IEND'),
    (b'BM', 'BMP', None),
    (b'GIF8', 'GIF', b';'),
    (b'II*\x00', 'TIFF', None),
    (b'MM\x00*', 'TIFF', None),
    (b'RIFF', 'WEBP', None),
)
_TAIL_BYTES = 4096


def check_image_bytes(path: str, size: int) -> Optional[str]:
    """Why the image file at ``path`` is not decodable, or None.

    Cheap: reads the first 12 and the last few KiB, so that a whole split
    can be checked when the dataset is built. Detects unknown formats (e.g.
    an HTML error page saved as .jpg) and JPEG/PNG/GIF files cut short.
    """
    with open(path, 'rb') as f:
        head = f.read(12)
        f.seek(max(0, size - _TAIL_BYTES))
        tail = f.read()
    for magic, name, end in _IMAGE_SIGNATURES:
        if head.startswith(magic):
            if name == 'WEBP' and head[8:12] != b'WEBP':
                continue
            if end is not None and end not in tail:
                return f'truncated {name} (no end marker)'
            return None
    return 'not an image (unknown file signature)'


def find_bad_images(
        paths: Sequence[Tuple[int, str]]) -> List[Tuple[int, str, str]]:
    """``(line_no, path, why)`` for each path that is not a readable image.

    A path is bad if it does not exist, is not a regular file, cannot be
    opened for reading, is empty (0 bytes), does not start like an image
    file, or is a JPEG/PNG/GIF without its end marker (truncated).
    """
    bad = []
    for line_no, path in paths:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            bad.append((line_no, path, 'missing'))
            continue
        except OSError as e:
            bad.append((line_no, path, f'cannot stat: {e.strerror}'))
            continue
        if not osp.isfile(path):
            bad.append((line_no, path, 'not a regular file'))
        elif st.st_size == 0:
            bad.append((line_no, path, 'empty file'))
        else:
            try:
                why = check_image_bytes(path, st.st_size)
            except OSError as e:
                why = f'not readable: {e.strerror}'
            if why:
                bad.append((line_no, path, why))
    return bad


#: the reasons of :func:`find_bad_images` that mean "not there"
_MISSING = ('missing', 'not a regular file')


def _images(n: int) -> str:
    return f'{n} image' if n == 1 else f'{n} images'


def bad_images_error(list_file: str,
                     bad: Sequence[Tuple[int, str, str]],
                     num_listed: int,
                     image_root: str,
                     max_listed: int = 20,
                     download_hint: Optional[str] = None
                     ) -> DatasetFormatError:
    """The error for the bad images of a split (:func:`find_bad_images`).

    :class:`DatasetFileNotFoundError` when every bad image is missing,
    else :class:`DatasetFormatError` (a truncated or non-image file exists:
    it is damaged, not missing). The message counts the missing and the
    damaged images with the right grammar, lists up to ``max_listed`` with
    their list-file line, and advises for both cases: the paths (relative
    to ``image_root``) or the files of one's own data, and for the
    benchmarks ``download_hint`` (default: the download scripts of
    data/README.md).
    """
    missing = [b for b in bad if b[2] in _MISSING or
               b[2].startswith('cannot stat')]
    damaged = [b for b in bad if b not in missing]
    parts = []
    if missing:
        parts.append(f'{len(missing)} missing')
    if damaged:
        parts.append(f'{len(damaged)} damaged (truncated, empty or not an '
                     'image)')
    total = len(bad)
    if num_listed == 1:
        head = 'the only image it lists is'
    else:
        verb = 'is' if total == 1 else 'are'
        head = (f'{total} of the {num_listed} images it lists {verb}' if
                total < num_listed else
                f'all {num_listed} images it lists are')
    if len(parts) == 1:
        what = 'missing' if missing else parts[0].split(' ', 1)[1]
    else:
        what = 'bad: ' + ' and '.join(parts)
    listed = '\n'.join(f'  line {line_no}: {path} ({why})'
                       for line_no, path, why in bad[:max_listed])
    more = (f'\n  ... and {total - max_listed} more'
            if total > max_listed else '')
    advice = []
    if missing:
        advice.append(
            f'image paths in {osp.basename(list_file)} are relative to '
            f'{image_root!r}: check that root (data_root / data_prefix) and '
            'that the files are there')
    if damaged:
        advice.append('replace the damaged files (an interrupted copy or '
                      'download leaves them truncated)')
    hint = download_hint or ('for VOC-MLT / COCO-MLT, bash '
                             'data/download_voc_mlt.sh / '
                             'data/download_coco_mlt.sh fetches (and '
                             'resumes) the images; see data/README.md')
    message = (f'{list_file}: {head} {what}:\n{listed}{more}\n'
               f'{"; ".join(advice)}. {hint[0].upper()}{hint[1:]}.')
    cls = DatasetFormatError if damaged else DatasetFileNotFoundError
    return cls(message)
