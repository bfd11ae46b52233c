"""tools/tune.py: the search space and metric from the config's tune dict
(the paper's by default), the val split by default and no test split
unless asked, trial configs, the pruning hook, interrupted trials re-queued,
and end to end on the toy set with the tiny model: an Optuna study with
pruning, a diverged trial, a SIGKILLed tuner resumed; the Ray backend."""
import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from mmengine.config import Config

pytestmark = pytest.mark.heavy(170)  # seconds on one CI core

REPO = Path(__file__).resolve().parents[2]
TOY_CFG = REPO / 'configs' / 'lmclip_toy_mlt_tiny.py'


TUNE_MODULES = ('space', 'trial_config', 'trials', 'optuna_backend',
                'ray_backend', 'report', 'main')


@pytest.fixture(scope='module')
def tune_tool():
    """The functions of ``lmclip_tools.tune``'s modules in one namespace."""
    import importlib
    names = {}
    for name in TUNE_MODULES:
        module = importlib.import_module(f'lmclip_tools.tune.{name}')
        names.update({k: v for k, v in vars(module).items()
                      if not k.startswith('__')})
    return SimpleNamespace(**names)


@pytest.fixture(scope='module')
def toy_cfg():
    import lmclip_mm  # noqa: F401
    return Config.fromfile(str(TOY_CFG))


# -- the tune dict ------------------------------------------------------------
def test_default_is_the_papers_search(tune_tool, toy_cfg):
    tune = tune_tool.tune_settings(toy_cfg)
    assert tune['space'] == {
        'batch_size': dict(type='choice', values=[8, 16, 32, 64],
                           key='train_dataloader.batch_size'),
        'gamma_neg': dict(type='loguniform', low=2.0, high=10.0,
                          key='model.loss.gamma_neg'),
        'loss_weight': dict(type='loguniform', low=0.1, high=10.0,
                            key='model.loss.loss_weight'),
        'sampler_power': dict(type='loguniform', low=1.0, high=2.0,
                              key='train_dataloader.sampler.power'),
        'class_weight_power': dict(type='loguniform', low=1.0, high=2.0,
                                   key='model.class_weight_power'),
    }
    assert (tune['metric'], tune['mode'], tune['split'],
            tune['num_samples']) == ('mAP_tail', 'max', 'val', 500)
    assert tune['sampler']['type'] == 'TPESampler'
    # ASHA: grace 5, reduction factor 2, max_t = the config's epochs
    assert tune_tool.pruner_spec(tune, 50) == dict(
        type='SuccessiveHalvingPruner', min_resource=5, reduction_factor=2,
        min_early_stopping_rate=0)
    from lmclip_tools.tune.optuna_utils import build_pruner
    assert isinstance(build_pruner(tune_tool.pruner_spec(tune, 50)),
                      optuna.pruners.SuccessiveHalvingPruner)
    dists = {n: tune_tool.optuna_distribution(s)
             for n, s in tune['space'].items()}
    assert dists['gamma_neg'] == optuna.distributions.FloatDistribution(
        2.0, 10.0, log=True)
    assert dists['batch_size'] == \
        optuna.distributions.CategoricalDistribution([8, 16, 32, 64])


def test_tune_dict_merges_over_the_default(tune_tool, toy_cfg):
    cfg = copy.deepcopy(toy_cfg)
    cfg.merge_from_dict({'tune.scheduler.grace_period': 1,
                         'tune.space.batch_size.values': [16, 32],
                         'tune.metric': 'mAP'})
    tune = tune_tool.tune_settings(cfg)
    assert tune['scheduler'] == dict(type='ASHA', grace_period=1,
                                     reduction_factor=2)
    assert tune['space']['batch_size']['values'] == [16, 32]
    assert len(tune['space']) == 5 and tune['metric'] == 'mAP'
    # _delete_ replaces the paper's space
    cfg = copy.deepcopy(toy_cfg)
    cfg.tune = dict(space=dict(_delete_=True, lr=dict(
        type='loguniform', low=1e-4, high=1e-2,
        key='optim_wrapper.optimizer.lr')))
    assert list(tune_tool.tune_settings(cfg)['space']) == ['lr']
    cfg.tune = dict(space=dict(lr=dict(type='normal', low=0, high=1)))
    with pytest.raises(tune_tool.TuneError, match='type must be one of'):
        tune_tool.tune_settings(cfg)
    with pytest.raises(tune_tool.TuneError, match='grace_period=5 is more'):
        tune_tool.pruner_spec(tune_tool.tune_settings(toy_cfg), 3)


def test_metric_resolved_by_suffix():
    from lmclip_tools.tune.hooks import resolve_metric
    metrics = {'long-tail/mAP': 1.0, 'long-tail/mAP_tail': 2.0}
    assert resolve_metric(metrics, 'mAP_tail') == 'long-tail/mAP_tail'
    assert resolve_metric({'multi-label/mAP_tail': 1}, 'mAP_tail') == \
        'multi-label/mAP_tail'
    assert resolve_metric(metrics, 'long-tail/mAP') == 'long-tail/mAP'
    with pytest.raises(KeyError, match='no validation metric'):
        resolve_metric(metrics, 'mAP_head')
    with pytest.raises(KeyError, match='ambiguous'):
        resolve_metric({'a/mAP': 1, 'b/mAP': 2}, 'mAP')


# -- splits and trial configs -------------------------------------------------
def test_trial_config(tune_tool, toy_cfg, tmp_path):
    tune = tune_tool.tune_settings(toy_cfg)
    params = dict(batch_size=16, gamma_neg=3.5, loss_weight=0.5,
                  sampler_power=1.25, class_weight_power=1.75)
    hook = dict(type='TrialReportHook')
    base = copy.deepcopy(toy_cfg)
    base.default_hooks.test_best = dict(type='BestCheckpointTestHook')
    cfg = tune_tool.build_trial_config(base, tune, params,
                                       str(tmp_path), hook, False)
    assert cfg.train_dataloader.batch_size == 16
    assert cfg.model.loss.gamma_neg == 3.5
    assert cfg.model.loss.loss_weight == 0.5
    assert cfg.train_dataloader.sampler.power == 1.25
    assert cfg.model.class_weight_power == 1.75
    # the honest val split: val held out of the train list, train without it
    assert cfg.val_dataloader.dataset.split == 'val'
    assert cfg.train_dataloader.dataset.split == 'train'
    assert cfg.train_dataloader.dataset.holdout_val is True
    assert cfg.train_cfg.val_interval == 1
    assert cfg.custom_hooks[-1] == hook and 'tune' not in cfg
    assert cfg.default_hooks.test_best is None
    from mmpretrain.registry import METRICS
    prefix = METRICS.get('LongTailAveragePrecision').default_prefix
    assert cfg.default_hooks.checkpoint.save_best == f'{prefix}/mAP_tail'
    assert cfg.work_dir == str(tmp_path)
    # the base config is untouched
    assert toy_cfg.val_dataloader.dataset.split == 'test'
    # the dumped trial config builds the same
    cfg.dump(str(tmp_path / 'c.py'))
    assert Config.fromfile(str(tmp_path / 'c.py')).model.loss.gamma_neg == 3.5


def test_val_fraction_and_seed_shared(tune_tool, toy_cfg):
    cfg = copy.deepcopy(toy_cfg)
    cfg.train_dataloader.dataset.val_fraction = 0.2
    tune = tune_tool.tune_settings(cfg)
    out = tune_tool.set_val_split(copy.deepcopy(cfg), tune, False)
    assert out.val_dataloader.dataset.val_fraction == 0.2
    assert out.train_dataloader.dataset.val_fraction == 0.2
    tune['val_seed'] = 3
    out = tune_tool.set_val_split(copy.deepcopy(cfg), tune, False)
    assert out.val_dataloader.dataset.val_seed == 3 == \
        out.train_dataloader.dataset.val_seed
    cfg.val_dataloader.dataset.val_fraction = 0.3
    with pytest.raises(tune_tool.TuneError, match='differ'):
        tune_tool.set_val_split(copy.deepcopy(cfg),
                                tune_tool.tune_settings(cfg), False)


def test_refuses_the_test_split(tune_tool, toy_cfg, tmp_path):
    cfg = copy.deepcopy(toy_cfg)
    tune = tune_tool.tune_settings(cfg)
    tune['split'] = 'test'
    with pytest.raises(tune_tool.TuneError, match='--allow-test-split'):
        tune_tool.set_val_split(copy.deepcopy(cfg), tune, False)
    assert tune_tool.set_val_split(
        copy.deepcopy(cfg), tune, True).val_dataloader.dataset.split == 'test'
    tune['split'] = None
    with pytest.raises(tune_tool.TuneError, match='--allow-test-split'):
        tune_tool.set_val_split(copy.deepcopy(cfg), tune, False)
    tune['split'] = 'val'
    cfg.val_dataloader.dataset = dict(type='CustomDataset', data_root='x')
    with pytest.raises(tune_tool.TuneError, match='has no `split`'):
        tune_tool.set_val_split(copy.deepcopy(cfg), tune, False)
    # the CLI refuses before any trial
    with pytest.raises(tune_tool.TuneError, match='--allow-test-split'):
        tune_tool.main([str(TOY_CFG), '--work-dir', str(tmp_path / 'w'),
                        '--cfg-options', 'tune.split=test'])
    assert not (tmp_path / 'w').exists()


def test_ray_backend_has_no_resume(tune_tool, tmp_path):
    with pytest.raises(tune_tool.TuneError, match='Tuner.restore'):
        tune_tool.main([str(TOY_CFG), '--work-dir', str(tmp_path / 'w'),
                        '--backend', 'ray', '--resume'])


def test_resume_checks_the_study(tune_tool, tmp_path):
    work = tmp_path / 'w'
    args = [str(TOY_CFG), '--work-dir', str(work), '--resume']
    with pytest.raises(tune_tool.TuneError, match='no study'):
        tune_tool.main(args)
    assert not work.exists()  # refused before anything was written
    # a study started with another search is not continued with this one
    work.mkdir()
    study = optuna.create_study(study_name='lmclip_toy_mlt_tiny',
                                storage=f'sqlite:///{work}/study.db')
    study.set_user_attr('tune_signature', '{"space": "another"}')
    with pytest.raises(tune_tool.TuneError, match='another search'):
        tune_tool.main(args)
    assert study.trials == []


def test_points_and_best_config(tune_tool, toy_cfg, tmp_path, toy_root,
                                capsys):
    tune = tune_tool.tune_settings(toy_cfg)
    points = tune_tool.complete_points(toy_cfg, tune['space'],
                                       [dict(gamma_neg=9.8)])
    assert points == [dict(batch_size=32, gamma_neg=9.8, loss_weight=20.0,
                           sampler_power=1.0, class_weight_power=1.0)]
    # the toy config's own lambda lies outside the paper's space: said
    assert capsys.readouterr().out == (
        "warning: tune.points_to_evaluate[0]: loss_weight=20.0 (the "
        "config's model.loss.loss_weight) lies outside tune.space: not in "
        '[0.1, 10.0]\n')
    tune_tool.complete_points(toy_cfg, tune['space'], [dict(
        gamma_neg=11.0, batch_size=12, loss_weight=1.0)])
    out = capsys.readouterr().out
    assert 'gamma_neg=11.0 (given) lies outside tune.space: not in [2.0, ' \
        '10.0]' in out and 'batch_size=12 (given) lies outside tune.space: ' \
        'not one of [8, 16, 32, 64]' in out
    with pytest.raises(tune_tool.TuneError, match='not in tune.space'):
        tune_tool.complete_points(toy_cfg, tune['space'], [dict(lr=1)])
    path = tune_tool.write_best_config(
        toy_cfg, tune, dict(points[0], batch_size=8), str(tmp_path / 'b.py'),
        ['best of 3'])
    best = Config.fromfile(path)
    assert best.train_dataloader.batch_size == 8
    assert best.model.loss.gamma_neg == 9.8
    # ready to train as the config was: test split, no tuning hook
    assert best.val_dataloader.dataset.split == 'test'
    assert best.custom_hooks == toy_cfg.custom_hooks
    assert Path(path).read_text().startswith('# best of 3\n')
    # it trains into its own folder beside it, and stays as written
    assert best.work_dir == str(tmp_path / 'best_train')
    before = Path(path).read_bytes()
    from lmclip_testing import data_root_options, run_tool
    run_tool(['train.py', path, '--cfg-options', *data_root_options(
        toy_root, 'train_cfg.max_epochs=1', 'train_cfg.val_interval=5',
        'train_dataloader.dataset.indices=16')])
    assert Path(path).read_bytes() == before
    assert (tmp_path / 'best_train' / 'epoch_1.pth').is_file()


def _report(history, objective='best'):
    from lmclip_tools.tune.hooks import trial_record
    return dict(trial_record(history, 'greater', objective), metric='v/m')


def test_table_and_error_lines(tune_tool, tmp_path, capsys):
    """One value per trial in the log, the table, trials.csv and
    best_trial.json: a pruned trial shows the value it was pruned with,
    with the epoch it comes from and its last metric; the winner is the
    best trial that ran the whole schedule."""
    row = tune_tool.trial_row
    rows = [
        row(0, 'COMPLETE', _report([[1, 41.5], [2, 30.0], [3, 2.95],
                                    [4, 3.0]]), dict(batch_size=8),
            seconds=9.0, work_dir='a'),
        # pruned at epoch 2 with its best so far: 45.0 (epoch 1)
        row(1, 'PRUNED', _report([[1, 45.0], [2, 3.8]]),
            dict(batch_size=16), seconds=3.0, work_dir='b'),
        row(2, 'FAIL', None, dict(batch_size=64), seconds=1.0,
            note='TrainingDivergedError: x', work_dir='c', metric='m'),
    ]
    best = tune_tool.best_row(rows, 'max')
    assert best is rows[0]  # 45.0 is from 2 of 4 epochs: not a candidate
    table = tune_tool.format_table(rows, 'v/m', best)
    assert '| 0*    | COMPLETE | 41.50 | 1        | 3.00 | 4      |' in table
    assert '| 1     | PRUNED   | 45.00 | 1        | 3.80 | 2      |' in table
    assert '| 2     | FAIL     |' in table and 'TrainingDivergedError' in table
    line = tune_tool.outcome_line(1, 'PRUNED', _report([[1, 45.0],
                                                        [2, 3.8]]), 3.0, 4)
    assert line == ('trial 1 pruned after epoch 2 of 4: v/m=45.0000 (best '
                    'of epochs 1-2, at epoch 1; 3.0 s)')
    assert tune_tool.outcome_line(1, 'PRUNED', _report([[1, 45.0]]), 3.0,
                                  4).endswith('v/m=45.0000 (epoch 1; 3.0 s)')
    last = _report([[1, 45.0], [2, 3.8]], 'last')
    assert tune_tool.outcome_line(1, 'PRUNED', last, None, 4).endswith(
        'v/m=3.8000 (epoch 2)')
    tune = dict(tune_tool.DEFAULT_TUNE, space=dict(
        batch_size=dict(values=[8, 16, 64])))
    base = Config(dict(work_dir=str(tmp_path),
                       train_dataloader=dict(batch_size=32)))
    args = SimpleNamespace(config='c.py', cfg_options=None)
    tune_tool.finish(args, base, tune, rows)
    out = capsys.readouterr().out
    assert 'a pruned trial shows the value it was pruned with' in out
    assert csv_rows(tmp_path / 'trials.csv')[1] == dict(
        trial='1', state='PRUNED', **{'v/m': '45.0'}, at_epoch='1',
        last='3.8', epochs='2', seconds='3.0', batch_size='16', note='',
        work_dir='b')
    record = json.loads((tmp_path / 'best_trial.json').read_text())
    assert (record['trial'], record['value'], record['value_epoch']) == (
        0, 41.5, 1)
    assert 'v/m = 41.5000 on split \'val\' (best epoch: 1)' in (
        tmp_path / 'best_config.py').read_text()
    log = ('Traceback (most recent call last):\n  File "x"\n'
           'lmclip_mm.engine.optim_wrappers.safe_optim_wrapper.'
           'TrainingDivergedError: Training diverged: non-finite loss\n')
    reason = tune_tool.error_line(log)
    assert reason == 'TrainingDivergedError: Training diverged: non-finite ' \
        'loss'
    assert tune_tool.is_trial_error(reason)
    assert not tune_tool.is_trial_error(
        tune_tool.error_line('KeyError: \'x\'\n'))
    assert tune_tool._ray_trial_number(
        '/r/tune_with_parameters_2e8c0e9c_1_batch_size=32,x=1_2026') == 0
    assert tune_tool._ray_trial_number('trainable_ab12c_00003_4_a=1') == 3


# -- the pruning hook and interrupted trials ----------------------------------
def fake_runner(tmp_path, epoch, max_epochs=3):
    return SimpleNamespace(epoch=epoch, max_epochs=max_epochs,
                           work_dir=str(tmp_path),
                           train_loop=SimpleNamespace(stop_training=False))


def test_optuna_pruning_hook(tmp_path):
    from lmclip_tools.tune.hooks import OptunaPruningHook
    url = f'sqlite:///{tmp_path}/s.db'
    pruner = dict(type='SuccessiveHalvingPruner', min_resource=1,
                  reduction_factor=2, min_early_stopping_rate=0)
    study = optuna.create_study(study_name='s', storage=url,
                                direction='maximize')
    for epoch_values in ([0.9, 0.95], [0.1]):
        trial = study.ask()
        hook = OptunaPruningHook(storage=url, study_name='s',
                                 trial_id=trial._trial_id, pruner=pruner,
                                 metric='mAP_tail')
        hook.before_train(None)
        for epoch, value in enumerate(epoch_values, 1):
            runner = fake_runner(tmp_path, epoch)
            hook.after_val_epoch(runner, {'x/mAP_tail': value, 'x/mAP': 0.})
    # trial 0 was promoted at rung 0; trial 1 (0.1 < 0.9) pruned at epoch 1
    report = json.loads((tmp_path / 'trial_report.json').read_text())
    assert report['metric'] == 'x/mAP_tail'
    assert report['stopped_epoch'] == 1 and runner.train_loop.stop_training
    frozen = study.trials[1]
    assert frozen.intermediate_values == {1: 0.1}
    assert study.trials[0].intermediate_values == {1: 0.9, 2: 0.95}
    # never at the last epoch
    trial = study.ask()
    hook = OptunaPruningHook(storage=url, study_name='s',
                             trial_id=trial._trial_id, pruner=pruner)
    hook.before_train(None)
    runner = fake_runner(tmp_path, 1, max_epochs=1)
    hook.after_val_epoch(runner, {'x/mAP_tail': 0.0})
    assert not runner.train_loop.stop_training
    assert json.loads(
        (tmp_path / 'trial_report.json').read_text())['stopped_epoch'] is None


def test_trial_report_hook_only_while_training(tmp_path):
    from lmclip_tools.tune.hooks import TrialReportHook
    hook = TrialReportHook(metric='mAP', rule='less')
    hook.after_val_epoch(fake_runner(tmp_path, 1), {'a/mAP': 1.0})
    assert not (tmp_path / 'trial_report.json').exists()  # tools/test.py
    hook.before_train(None)
    for epoch, v in ((1, 3.0), (2, 1.0), (3, 2.0)):
        hook.after_val_epoch(fake_runner(tmp_path, epoch), {'a/mAP': v})
    report = json.loads((tmp_path / 'trial_report.json').read_text())
    assert report == dict(metric='a/mAP', objective='best',
                          history=[[1, 3.0], [2, 1.0], [3, 2.0]],
                          value=1.0, value_epoch=2,
                          best=1.0, best_epoch=2, last=2.0,
                          stopped_epoch=None)


class _Recorder:
    """A TrialReportHook subclass's report(): what a tuner is given."""

    def __init__(self):
        self.given = []

    def __call__(self, runner, epoch, value, metrics):
        self.given.append((epoch, value))
        return epoch == 2


@pytest.mark.parametrize('objective,rule,given,value', [
    ('best', 'greater', [(1, 5.0), (2, 5.0)], (5.0, 1)),
    ('last', 'greater', [(1, 5.0), (2, 3.0)], (3.0, 2)),
    ('best', 'less', [(1, 5.0), (2, 3.0)], (3.0, 2)),
])
def test_one_trial_value_for_the_pruner_and_the_report(
        tmp_path, objective, rule, given, value):
    """The value a tuner's pruner is given after each epoch is the trial's
    value so far (best or last by tune.objective), the one the report file
    (and so the log, the table and trials.csv) holds when it stops."""
    from lmclip_tools.tune.hooks import TrialReportHook
    hook = TrialReportHook(metric='mAP_tail', rule=rule, objective=objective)
    hook.report = _Recorder()
    hook.before_train(None)
    for epoch, v in ((1, 5.0), (2, 3.0)):
        runner = fake_runner(tmp_path, epoch)
        hook.after_val_epoch(runner, {'x/mAP_tail': v})
    assert hook.report.given == given
    report = json.loads((tmp_path / 'trial_report.json').read_text())
    assert report['stopped_epoch'] == 2 and runner.train_loop.stop_training
    assert (report['value'], report['value_epoch']) == value
    assert report['value'] == given[-1][1]
    with pytest.raises(ValueError, match="'best' or 'last'"):
        TrialReportHook(objective='max')


def test_the_report_comes_after_the_best_checkpoint():
    """Ray's ASHA ends a trial's process when it gets a report: the epoch's
    best checkpoint must be saved first (a pruned Ray trial keeps its
    best_*.pth, as an Optuna one does)."""
    from mmengine.hooks import CheckpointHook
    from mmengine.runner.priority import get_priority as priority
    from lmclip_tools.tune.hooks import (OptunaPruningHook,
                                         RayTuneReportHook)
    for hook in (OptunaPruningHook, RayTuneReportHook):
        assert priority(hook.priority) > priority(CheckpointHook.priority)


def test_interrupted_trials_requeued(tune_tool, tmp_path):
    study = optuna.create_study(study_name='s',
                                storage=f'sqlite:///{tmp_path}/s.db')
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    for pid in (dead.pid, os.getpid()):
        trial = study.ask()
        trial.suggest_float('x', 0, 1)
        trial.set_user_attr('host', tune_tool.HOST)
        trial.set_user_attr('pid', pid)
        trial.set_user_attr('pid_token', tune_tool.process_token(pid) or
                            f'{pid}:gone')
    # another host's trial is left to the heartbeat
    trial = study.ask()
    trial.set_user_attr('host', 'elsewhere')
    trial.set_user_attr('pid', dead.pid)
    assert tune_tool.recover_interrupted(study) == [0]
    trials = study.get_trials()
    states = [t.state.name for t in trials]
    assert states == ['FAIL', 'RUNNING', 'RUNNING', 'WAITING']
    assert trials[0].user_attrs['interrupted'] == 'tuner process gone'
    assert trials[3].params == trials[0].params
    assert trials[3].user_attrs == {'retry_of': 0}
    # the interrupted trial does not count towards --n-trials
    assert tune_tool.counted_trials(study) == []


def test_a_trial_its_tuner_never_claimed_is_requeued(tune_tool, tmp_path):
    """A tuner killed between the trial's creation and the recording of
    its pid: the trial is failed and queued again by the next tuner once
    it is older than UNCLAIMED_S, not left RUNNING until the heartbeat's
    grace period; a trial just created (its tuner about to claim it) is
    left alone."""
    import datetime
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial
    study = optuna.create_study(study_name='s',
                                storage=f'sqlite:///{tmp_path}/s.db')
    storage = study._storage
    now = datetime.datetime.now()
    for age in (tune_tool.UNCLAIMED_S + 5, 1):
        template = create_trial(state=TrialState.RUNNING, params=dict(x=0.5),
                                distributions=dict(x=FloatDistribution(0, 1)))
        template.datetime_start = now - datetime.timedelta(seconds=age)
        storage.create_new_trial(study._study_id, template_trial=template)
    assert tune_tool.recover_interrupted(study) == [0]
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ['FAIL', 'RUNNING', 'WAITING']
    assert trials[0].user_attrs['interrupted'] == \
        'tuner killed as the trial started'
    assert trials[2].params == dict(x=0.5)


def test_interrupted_tuner_stops_and_requeues_its_trial(
        tune_tool, tmp_path, monkeypatch):
    """Ctrl-C while a trial trains: the training process is killed, the
    trial's values are queued again, the interrupt goes on."""
    sleeper = tmp_path / 'sleep.py'
    sleeper.write_text('import time\ntime.sleep(120)\n')
    from lmclip_tools.tune import optuna_backend
    monkeypatch.setattr(optuna_backend, 'TRAIN_CMD',
                        (sys.executable, str(sleeper)))
    study = optuna.create_study(study_name='s',
                                storage=f'sqlite:///{tmp_path}/s.db')
    trial = study.ask()
    trial.suggest_float('x', 0, 1)
    objective = tune_tool.OptunaObjective.__new__(tune_tool.OptunaObjective)

    def interrupt(*_):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 2.0)
    try:
        with pytest.raises(KeyboardInterrupt):
            objective._train('c.py', str(tmp_path), str(tmp_path / 'l.log'),
                             trial)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    pid = study.trials[0].user_attrs['train_pid']
    assert not Path(f'/proc/{pid}').exists()
    assert study.trials[0].user_attrs['interrupted'] == 'tuner interrupted'
    waiting = study.trials[1]
    assert waiting.state.name == 'WAITING'
    assert waiting.params == study.trials[0].params


# -- end to end on the toy set ------------------------------------------------
TOY_TUNE_CFG = '''
_base_ = [{base!r}]
data_root = {root!r}
# a subset of the toy train list: a few seconds per epoch
train_dataloader = dict(dataset=dict(data_root=data_root, indices=96))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = dict(dataset=dict(data_root=data_root))
train_cfg = dict(max_epochs=2)
default_hooks = dict(logger=dict(interval=5))
tune = dict(
    space=dict(batch_size=dict(values=[16, 32]),
               loss_weight=dict(low=5.0, high=40.0)),
    scheduler=dict(grace_period=1),
    # lambda = 1e300: an infinite loss at the first iteration
    points_to_evaluate=[dict(loss_weight=1e300)],
)
'''


def write_toy_tune_cfg(tmp_path):
    path = tmp_path / 'toy_tune.py'
    path.write_text(TOY_TUNE_CFG.format(base=str(TOY_CFG),
                                        root=str(tmp_path / 'toy')))
    return path


def tune_cmd(cfg, work, *extra):
    return [sys.executable, str(REPO / 'tools' / 'tune.py'), str(cfg),
            '--work-dir', str(work)] + [str(x) for x in extra]


def tool_env():
    from lmclip_testing import tool_env
    return tool_env()


def wait_for(predicate, timeout, what):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f'timed out waiting for {what}')


def serve_trials(monkeypatch):
    """The trials of a tuner run in this process start as forks of the tool
    server (``python -m lmclip_tools.train`` as ever, without its ~7 s of
    imports): this process's environment becomes the tools' (which the
    tuner hands its trials), its ``subprocess.Popen`` a
    :class:`tool_server.ServedPopen`."""
    import types

    import tool_server
    from lmclip_tools.tune import optuna_backend
    base = tool_env()
    for key, value in base.items():
        if os.environ.get(key) != value:
            monkeypatch.setenv(key, value)

    def popen(cmd, stdout, stderr, env, preexec_fn=None):
        assert stderr is subprocess.STDOUT
        return tool_server.ServedPopen(cmd, stdout.name, env, base)

    monkeypatch.setattr(optuna_backend, 'subprocess', types.SimpleNamespace(
        Popen=popen, STDOUT=subprocess.STDOUT))


def test_optuna_study_prunes_fails_and_resumes(tune_tool, tmp_path, capsys,
                                               monkeypatch):
    cfg = write_toy_tune_cfg(tmp_path)
    work = tmp_path / 'work'
    log1 = tmp_path / 'first.log'
    # the first tuner: tools/tune.py in a fork of the tool server (without
    # its imports); its trials are fresh processes, as for a user
    import tool_server
    proc = tool_server.ServedPopen(tune_cmd(cfg, work, '--n-trials', 6),
                                   log1, tool_env(), tool_env(), cwd=REPO)
    try:
        # kill the tuner while trial 2 trains
        wait_for(lambda: (work / 'trial_2' / 'tune_trial.log').exists()
                 or proc.poll() is not None, 900, 'trial 2')
        assert proc.poll() is None, log1.read_text()[-3000:]
        time.sleep(3)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    first = log1.read_text()
    assert 'trial 2 started' in first
    study = optuna.load_study(study_name='toy_tune',
                              storage=f'sqlite:///{work}/study.db')
    killed = study.trials[2]
    assert killed.state.name == 'RUNNING'
    # the trial's training process died with the tuner
    train_pid = killed.user_attrs['train_pid']
    wait_for(lambda: not Path(f'/proc/{train_pid}').exists() or
             'Z' in Path(f'/proc/{train_pid}/stat').read_text().split()[2],
             30, 'the killed trial\'s training process to end')

    # without --resume the existing study is refused (in this process: the
    # tool's own refusal; a tuner's start costs ~14 s of imports)
    tune_main = tune_tool.main
    with pytest.raises(tune_tool.TuneError, match='--resume'):
        tune_main([str(cfg), '--work-dir', str(work), '--n-trials', '6'])

    # the resumed tuner runs in this process, its trials in forks of the
    # tool server (those of the first tuner were fresh processes): a second
    # tuner start would cost ~14 s, each fresh trial ~7 s
    serve_trials(monkeypatch)
    capsys.readouterr()
    tune_main([str(cfg), '--work-dir', str(work), '--n-trials', '6',
               '--resume'])
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert 'trials [2] were running when their tuner was killed' in out

    study = optuna.load_study(study_name='toy_tune',
                              storage=f'sqlite:///{work}/study.db')
    trials = study.get_trials()
    by_state = {}
    for t in trials:
        by_state.setdefault(t.state.name, []).append(t)
    counted = [t for t in trials if 'interrupted' not in t.user_attrs]
    assert len(counted) == 6, [(t.number, t.state.name) for t in trials]
    # the killed trial: failed as interrupted, its values run again
    assert trials[2].state.name == 'FAIL'
    assert trials[2].user_attrs['interrupted'] == 'tuner process gone'
    retry = [t for t in trials if t.user_attrs.get('retry_of') == 2]
    assert len(retry) == 1 and retry[0].params == trials[2].params
    assert retry[0].state.name in ('COMPLETE', 'PRUNED')
    # the enqueued lambda = 1e300 diverged: failed, the study went on
    assert trials[0].params['loss_weight'] == 1e300
    assert trials[0].state.name == 'FAIL'
    assert 'TrainingDivergedError' in trials[0].user_attrs['fail_reason']
    assert 'trial 0 failed' in first and 'TrainingDivergedError' in first
    # pruning, seen in the log and in the study
    assert by_state.get('PRUNED'), [(t.number, t.state.name) for t in trials]
    assert 'pruned after epoch 1' in first + out
    pruned = by_state['PRUNED'][0]
    assert pruned.user_attrs['epochs'] == 1
    assert 'OptunaPruningHook: stopping this trial after epoch 1' in (
        work / f'trial_{pruned.number}' / 'tune_trial.log').read_text()
    assert by_state.get('COMPLETE')
    # every trial a normal mmengine run, best checkpoint only
    done = by_state['COMPLETE'][0]
    tdir = work / f'trial_{done.number}'
    names = sorted(p.name for p in tdir.iterdir())
    assert 'trial_config.py' in names and 'tune_trial.log' in names
    assert any(n.startswith('best_') and n.endswith('mAP_tail_epoch_'
               f'{done.user_attrs["best_epoch"]}.pth') for n in names)
    assert not any(n.startswith('epoch_') for n in names)
    assert list(tdir.glob('2*/vis_data/config.py'))  # mmengine's dump
    # the trials share one image cache: the first trial decoded the toy
    # images into it, every later trial (the retried one too) read them
    # (the trial killed with its tuner may have logged nothing yet)
    later = [t for t in trials[1:] if 'interrupted' not in t.user_attrs]
    assert len(later) >= 5
    for t in later:
        text = (work / f'trial_{t.number}' / 'tune_trial.log').read_text()
        assert 'image cache:' in text and 'images from' in text, t.number
        assert 'image cache: decoding' not in text, t.number
    trial_cfg = Config.fromfile(str(tdir / 'trial_config.py'))
    assert trial_cfg.val_dataloader.dataset.split == 'val'
    assert trial_cfg.train_dataloader.dataset.holdout_val is True
    # the table and the best config
    assert 'trials (' in out and '| trial | state' in out
    best = max(by_state['COMPLETE'], key=lambda t: t.value)
    assert best.value == study.best_value
    assert f'best: trial {best.number}' in out
    best_cfg = Config.fromfile(str(work / 'best_config.py'))
    assert best_cfg.train_dataloader.batch_size == best.params['batch_size']
    assert best_cfg.model.loss.loss_weight == best.params['loss_weight']
    assert best_cfg.val_dataloader.dataset.split == 'test'
    assert (work / 'trials.csv').read_text().count('\n') == len(trials) + 1
    record = json.loads((work / 'best_trial.json').read_text())
    assert (record['trial'], record['value']) == (best.number, best.value)
    assert best_cfg.work_dir == str(work / 'best_train')

    assert_same_semantics_as_optuna(
        first + out, work, csv_rows(work / 'trials.csv'),
        {t.number: t.user_attrs['report'] for t in trials
         if t.state.name in ('COMPLETE', 'PRUNED')})

    # all trials done: a further --resume runs none
    capsys.readouterr()
    tune_main([str(cfg), '--work-dir', str(work), '--n-trials', '6',
               '--resume'])
    assert '6 of 6 trials done' in capsys.readouterr().out
    assert len(optuna.load_study(
        study_name='toy_tune',
        storage=f'sqlite:///{work}/study.db').trials) == len(trials)


@pytest.mark.slow
def test_two_workers_share_one_study(tmp_path):
    """Several GPUs/machines: workers given the same --storage run the
    trials of one study, each trial once, until --n-trials in all."""
    write_toy_tune_cfg(tmp_path)
    cfg = tmp_path / 'toy_tune_point.py'  # a point that trains
    cfg.write_text("_base_ = ['toy_tune.py']\n"
                   'tune = dict(points_to_evaluate=['
                   'dict(loss_weight=10.0)])\n')
    work = tmp_path / 'work'
    db = tmp_path / 'shared.db'
    cmd = tune_cmd(cfg, work, '--n-trials', 3, '--storage',
                   f'sqlite:///{db}', '--study-name', 'shared',
                   '--cfg-options', 'train_cfg.max_epochs=1')
    logs = [tmp_path / f'worker{i}.log' for i in range(2)]
    procs = []
    for log_path in logs:  # at the same instant
        with open(log_path, 'w') as out:
            procs.append(subprocess.Popen(cmd, stdout=out,
                                          stderr=subprocess.STDOUT,
                                          env=tool_env(), cwd=REPO))
    for proc in procs:
        assert proc.wait(timeout=1500) == 0, [p.read_text()[-3000:]
                                              for p in logs]
    study = optuna.load_study(study_name='shared', storage=f'sqlite:///{db}')
    trials = study.get_trials()
    assert all(t.state.name == 'COMPLETE' for t in trials)
    # each worker stops once 3 trials are done: one more at most per
    # other worker (a trial it had started meanwhile)
    assert 3 <= len(trials) <= 4
    assert len({t.user_attrs['pid'] for t in trials}) == 2
    # no point twice: the enqueued one once, the sampled ones distinct
    points = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(points)) == len(points), points
    assert sum(t.params['loss_weight'] == 10.0 for t in trials) == 1
    for t in trials:
        assert (work / f'trial_{t.number}' / 'trial_report.json').exists()


def test_ray_backend(tmp_path):
    cfg = write_toy_tune_cfg(tmp_path)
    work = tmp_path / 'work'
    from lmclip_testing import run_tool
    proc = run_tool(['tune.py', cfg, '--work-dir', work, '--backend', 'ray',
                     '--n-trials', 2, '--ray-num-cpus', 2], check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    rows = list(csv_rows(work / 'trials.csv'))
    assert [r['trial'] for r in rows] == ['0', '1']
    # the enqueued diverging point failed, the other trial trained
    assert rows[0]['state'] == 'FAIL'
    assert 'TrainingDivergedError' in rows[0]['note']
    assert float(rows[0]['loss_weight']) == 1e300
    assert rows[1]['state'] == 'COMPLETE' and rows[1]['epochs'] == '2'
    trial_cfg = Config.fromfile(str(work / 'trial_1' / 'trial_config.py'))
    assert trial_cfg.val_dataloader.dataset.split == 'val'
    assert trial_cfg.custom_hooks[-1].type == 'RayTuneReportHook'
    report = json.loads((work / 'trial_1' / 'trial_report.json').read_text())
    assert [e for e, _ in report['history']] == [1, 2]
    assert_same_semantics_as_optuna(out, work, rows, {1: report})
    best_cfg = Config.fromfile(str(work / 'best_config.py'))
    assert best_cfg.model.loss.loss_weight == float(rows[1]['loss_weight'])


def assert_same_semantics_as_optuna(out, work, rows, reports):
    """What both backends do alike: the tuner's lines (a start and an end
    per trial, no backend's own status tables), the metric's full name,
    one value per trial in the log and trials.csv, and the trial folders
    (trial config, trial log, best checkpoint only, no stray files)."""
    by_number = {int(r['trial']): r for r in rows}
    assert 'long-tail/mAP_tail' in rows[0]
    for number, report in reports.items():
        row = by_number[number]
        assert float(row['long-tail/mAP_tail']) == report['value']
        assert int(row['at_epoch']) == report['value_epoch']
        what = 'pruned' if row['state'] == 'PRUNED' else 'complete'
        assert f'trial {number} {what}' in out
        assert f'long-tail/mAP_tail={report["value"]:.4f}' in out
    for row in rows:
        assert f'trial {row["trial"]} started' in out
        if 'interrupted' in row['note'] or 'process gone' in row['note']:
            continue  # killed with its tuner: as it was
        if row['state'] == 'FAIL':
            assert f'trial {row["trial"]} failed after ' in out
        assert float(row['seconds']) > 0, row  # the trial's wall time
        names = sorted(p.name for p in (work / f'trial_{row["trial"]}')
                       .iterdir())
        assert 'trial_config.py' in names and 'tune_trial.log' in names
        assert not [n for n in names if n.startswith(('epoch_', 'tmp'))
                    or n == 'last_checkpoint'], names
        if row['state'] != 'FAIL':
            assert any(n.startswith('best_') for n in names), names
    assert '[I 20' not in out and '[W 20' not in out  # Optuna's own lines
    assert 'Trial status' not in out  # Ray's
    lines = [x for x in out.splitlines() if x.strip()]
    assert len(lines) < 15 + 4 * len(rows), out


def csv_rows(path):
    import csv
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def test_trial_schedules_follow_max_epochs_as_train_py(tune_tool, tmp_path,
                                                       capsys):
    """--cfg-options train_cfg.max_epochs=4: every trial's cosine ends at
    epoch 4 (as tools/train.py's), not at the config's 30."""
    args = tune_tool.parse_args([str(TOY_CFG), '--work-dir', str(tmp_path),
                                 '--cfg-options', 'train_cfg.max_epochs=4'])
    base = tune_tool.load_base(args)
    assert capsys.readouterr().out == (
        'note: param_scheduler[1] (CosineAnnealingLR): end 30 -> 4, T_max 28 '
        '-> 2 to follow train_cfg.max_epochs=4\n')
    tune = tune_tool.tune_settings(base)
    cfg = tune_tool.build_trial_config(
        base, tune, dict(batch_size=16), str(tmp_path), None, False)
    assert cfg.train_cfg.max_epochs == 4
    cosine = cfg.param_scheduler[1]
    assert (cosine['end'], cosine['T_max']) == (4, 2)


def test_workers_asking_at_once_draw_distinct_reproducible_points(
        tune_tool, tmp_path):
    """Two workers of one study (two study objects on one storage) that ask
    with the same history draw different points (seed + trial number, not
    pids or timing); the same history gives the same points again."""
    tune = tune_tool.tune_settings(Config.fromfile(str(TOY_CFG)))
    space = {n: tune_tool.optuna_distribution(s)
             for n, s in tune['space'].items()}

    def draw(url):
        workers = [optuna.load_study(study_name='s', storage=url)
                   for _ in range(2)]
        for w in workers:
            w.sampler = tune_tool.build_sampler(tune['sampler'],
                                                per_trial=True)
        points = []
        for _ in range(12):  # the first 10 are TPE's random start-up
            asked = [w.ask(space) for w in workers]  # at the same instant
            points += [tuple(sorted(t.params.items())) for t in asked]
            for w, t in zip(workers, asked):
                w.tell(t, sum(v for v in t.params.values()))
        return points

    runs = []
    for i in range(2):
        url = f'sqlite:///{tmp_path}/s{i}.db'
        optuna.create_study(study_name='s', storage=url,
                            direction='maximize')
        runs.append(draw(url))
    assert len(set(runs[0])) == len(runs[0]) == 24
    assert runs[0] == runs[1]


def test_resume_refuses_changed_settings_naming_them(tune_tool, tmp_path,
                                                     monkeypatch):
    """--resume (or a joining worker) with other --cfg-options than the
    study's trials had: refused, naming each changed setting; the same
    settings continue."""
    from lmclip_tools.tune import optuna_backend

    class Instant:  # a trial that trains nothing
        def __init__(self, *args):
            pass

        def __call__(self, trial):
            for name, spec in self.space.items():
                tune_tool.suggest(trial, name, spec)
            trial.set_user_attr('epochs', 1)
            return 1.0

    tune = tune_tool.tune_settings(Config.fromfile(str(TOY_CFG)))
    Instant.space = tune['space']
    monkeypatch.setattr(optuna_backend, 'OptunaObjective', Instant)
    args = [str(TOY_CFG), '--work-dir', str(tmp_path / 'w'), '--n-trials',
            '1', '--cfg-options', 'tune.points_to_evaluate=[]']
    tune_tool.main(args + ['train_cfg.max_epochs=8'])
    with pytest.raises(tune_tool.TuneError) as err:
        tune_tool.main(args + ['train_cfg.max_epochs=6',
                               'optim_wrapper.optimizer.lr=0.1', '--resume'])
    message = str(err.value)
    assert 'train_cfg.max_epochs: was 8, now 6' in message
    assert 'optim_wrapper.optimizer.lr: was ' in message
    assert '\n' not in message
    # so is another search (the objective changes every trial's value)
    with pytest.raises(tune_tool.TuneError) as err:
        tune_tool.main(args + ['train_cfg.max_epochs=8',
                               'tune.objective=last', '--resume'])
    message = str(err.value)
    assert "another search: tune.objective: was 'best', now 'last' (" \
        in message and '\n' not in message
    tune_tool.main(args + ['train_cfg.max_epochs=8', '--resume'])


def test_argument_errors_come_before_the_heavy_imports(tmp_path):
    code = (
        'import sys\n'
        'from lmclip_tools.tune import main as m\n'
        'for argv in ([sys.argv[1] + "/none.py"],\n'
        '             [sys.argv[2], "--backend", "ray", "--resume"],\n'
        '             [sys.argv[2], "--resume", "--work-dir", sys.argv[1]]):\n'
        '    try:\n'
        '        m.main(argv)\n'
        '    except m.TuneError as e:\n'
        '        print("ERR", e)\n'
        'print("IMPORTED", sorted(x for x in ("torch", "lmclip_mm", "optuna")'
        ' if x in sys.modules))\n')
    out = subprocess.run([sys.executable, '-c', code, str(tmp_path),
                          str(TOY_CFG)], env=tool_env(), capture_output=True,
                         text=True, check=True).stdout.splitlines()
    assert out[0] == f'ERR config not found: {tmp_path}/none.py'
    assert 'Tuner.restore' in out[1]
    assert out[2] == f'ERR --resume: no study in {tmp_path} (no study.db) ' \
        'to resume'
    assert out[3] == 'IMPORTED []'


def test_a_trial_config_error_stops_the_study_in_one_line(tmp_path):
    """A trial that fails for a reason every trial would share (here a
    search key its component does not take): the study stops with one
    error line naming the trial's log, no traceback, and the table and
    trials.csv are written."""
    write_toy_tune_cfg(tmp_path)
    cfg = tmp_path / 'bad_key.py'
    cfg.write_text(
        "_base_ = ['toy_tune.py']\n"
        'tune = dict(points_to_evaluate=[], space=dict(_delete_=True, '
        "g=dict(type='uniform', low=2.0, high=3.0, "
        "key='model.loss.gama_neg')))\n")
    work = tmp_path / 'work'
    from lmclip_testing import run_tool
    proc = run_tool(['tune.py', cfg, '--work-dir', work, '--n-trials', 2],
                    check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    assert 'Traceback' not in out, out[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: trial 0 failed: model.loss.gama_neg: "
                           "BalancedAsymmetricLoss takes no argument "
                           "'gama_neg'"), last
    assert str(work / 'trial_0' / 'tune_trial.log') in last
    assert '| 0     | FAIL' in proc.stdout
    assert (work / 'trials.csv').read_text().count('\n') == 2
