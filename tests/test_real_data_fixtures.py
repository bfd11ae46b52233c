"""The real-data tests run when the split files they read are there, never
because a folder exists (a failed download must leave the suite green)."""
import shutil

import pytest
from lmclip_testing import SPLIT_FILES, has_split_files, real_data_dir


@pytest.mark.parametrize('dataset', sorted(SPLIT_FILES))
def test_a_folder_alone_is_not_data(dataset, tmp_path):
    sub, names = SPLIT_FILES[dataset]
    folder = tmp_path / dataset / sub
    folder.mkdir(parents=True)
    (tmp_path / dataset / 'downloads').mkdir()
    assert not has_split_files(tmp_path, dataset)
    for name in names[:-1]:
        (folder / name).write_text('x 0\n')
    assert not has_split_files(tmp_path, dataset)  # one file missing
    (folder / names[-1]).write_text('')
    assert not has_split_files(tmp_path, dataset)  # one file empty
    (folder / names[-1]).write_text('x 0\n')
    assert has_split_files(tmp_path, dataset)


@pytest.mark.parametrize('dataset', sorted(SPLIT_FILES))
def test_data_dir_with_empty_folders_is_passed_over(dataset, tmp_path,
                                                    monkeypatch):
    sub, _ = SPLIT_FILES[dataset]
    (tmp_path / dataset / sub).mkdir(parents=True)
    monkeypatch.setenv('LMCLIP_DATA_DIR', str(tmp_path))
    found = real_data_dir(dataset)
    assert found != tmp_path.resolve()
    if found is not None:  # the repository's data/ or ../shared/data
        assert has_split_files(found, dataset)
        # and a copy of those files where LMCLIP_DATA_DIR points is taken
        shutil.copytree(found / dataset / sub, tmp_path / dataset / sub,
                        dirs_exist_ok=True)
        assert real_data_dir(dataset) == tmp_path.resolve()
