"""Heavy test files are collected first, heaviest first (root conftest)."""
from types import SimpleNamespace

import pytest


def _item(name, seconds=None):
    mark = None if seconds is None else pytest.mark.heavy(seconds).mark
    return SimpleNamespace(name=name,
                           get_closest_marker=lambda _name, m=mark: m)


def test_heavy_files_first_heaviest_first(request):
    items = [_item('a1'), _item('b', 40), _item('a2'), _item('c', 240),
             _item('d', 40)]
    root = str(request.config.rootpath / 'tests' / 'conftest.py')
    conftest = next(p for p in request.config.pluginmanager.get_plugins()
                    if getattr(p, '__file__', None) == root)
    conftest.pytest_collection_modifyitems(request.session, request.config,
                                           items)
    assert [i.name for i in items] == ['c', 'b', 'd', 'a1', 'a2']


def test_this_run_is_ordered(request):
    """The collected suite itself: no heavier file after a lighter one."""
    weights = []
    for item in request.session.items:
        mark = item.get_closest_marker('heavy')
        weights.append(mark.args[0] if mark else 0)
    assert weights == sorted(weights, reverse=True)
