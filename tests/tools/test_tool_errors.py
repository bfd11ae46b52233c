"""First-run errors of the tools: one ``error:`` line, exit status 1
(issue 15)."""
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOY = REPO / 'configs' / 'lmclip_toy_mlt_tiny.py'


def _error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith('error:')]


def test_type_typo_is_one_error_line_naming_key_and_closest_name(
        tool, tmp_path):
    proc = tool(['train.py', TOY, '--work-dir', tmp_path, '--cfg-options',
                 'model.type=LMCLIPClasifier'], check=False)
    assert proc.returncode == 1, proc.stderr
    assert 'Traceback' not in proc.stderr
    assert _error_lines(proc.stderr) == [
        "error: model: type 'LMCLIPClasifier' is not registered in "
        "mmpretrain::model; did you mean 'LMCLIPClassifier'?"]
    assert proc.stderr.rstrip().endswith(_error_lines(proc.stderr)[0])
    proc = tool(['train.py', TOY, '--work-dir', tmp_path, '--cfg-options',
                 'model.type=LMCLIPClasifier'], env={'LMCLIP_TRACEBACK': '1'},
                check=False)
    assert proc.returncode == 1 and 'Traceback' in proc.stderr
    assert 'KeyError' in proc.stderr
