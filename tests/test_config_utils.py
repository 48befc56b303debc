"""detforge.utils: the 'detforge' logger (rank-0-only log files, print_log) and small helpers."""
import logging

import pytest

from detforge.utils.logging import get_logger, get_rank, get_root_logger, print_log
from detforge.utils.misc import is_list_of, is_seq_of, mkdir_or_exist, timestamp, to_2tuple


@pytest.fixture
def restore_logger():
    """Detach whatever a test adds to the 'detforge' logger, so later tests are unaffected."""
    logger = logging.getLogger('detforge')
    handlers, level = list(logger.handlers), logger.level
    yield
    for handler in logger.handlers[:]:
        if handler not in handlers:
            logger.removeHandler(handler)
            handler.close()
    logger.setLevel(level)


def test_root_logger_writes_its_file_on_rank_0(tmp_path, monkeypatch, restore_logger):
    monkeypatch.delenv('RANK', raising=False)
    log_file = tmp_path / 'logs' / 'run.log'
    logger = get_root_logger(log_file=log_file, log_level='INFO')
    assert logger.name == 'detforge' and logger.level == logging.INFO
    logger.info('hello from rank 0')
    logger.debug('not at INFO')
    get_root_logger(log_file=log_file)  # a second call adds no second file handler
    logger.info('second line')
    for handler in logger.handlers:
        handler.flush()
    lines = log_file.read_text().splitlines()
    assert len(lines) == 2 and 'INFO - hello from rank 0' in lines[0]


def test_other_ranks_write_no_file_and_log_errors_only(tmp_path, monkeypatch):
    monkeypatch.setenv('RANK', '1')
    assert get_rank() == 1
    log_file = tmp_path / 'rank1.log'
    logger = get_logger('detforge_test_rank1', log_file=log_file)
    assert logger.level == logging.ERROR and not log_file.exists()


def test_child_loggers_propagate_to_the_root_logger(tmp_path, monkeypatch, restore_logger):
    monkeypatch.delenv('RANK', raising=False)
    log_file = tmp_path / 'run.log'
    get_root_logger(log_file=log_file)
    get_logger('detforge.engine').info('from the engine')
    for handler in logging.getLogger('detforge').handlers:
        handler.flush()
    assert 'detforge.engine - INFO - from the engine' in log_file.read_text()


def test_print_log_targets(capsys, tmp_path, monkeypatch, restore_logger):
    monkeypatch.delenv('RANK', raising=False)
    print_log('to stdout')
    print_log('dropped', logger='silent')
    assert capsys.readouterr().out == 'to stdout\n'
    log_file = tmp_path / 'p.log'
    logger = get_root_logger(log_file=log_file)
    print_log('by logger', logger=logger, level=logging.WARNING)
    print_log('by name', logger='detforge')
    for handler in logger.handlers:
        handler.flush()
    text = log_file.read_text()
    assert 'WARNING - by logger' in text and 'INFO - by name' in text
    with pytest.raises(TypeError):
        print_log('x', logger=3)


def test_unknown_level_is_an_error():
    with pytest.raises(ValueError, match='unknown log level'):
        get_logger('detforge_test_level', log_level='LOUD')


def test_misc_helpers(tmp_path):
    made = mkdir_or_exist(tmp_path / 'a' / 'b')
    assert made.is_dir() and mkdir_or_exist(made) == made
    assert is_seq_of((1, 2), int) and not is_seq_of([1, 'x'], int)
    assert is_list_of([1.0], float) and not is_list_of((1.0,), float)
    assert len(timestamp()) == 15 and timestamp()[8] == '_'
    assert to_2tuple(3) == (3, 3) and to_2tuple([640, 480]) == (640, 480)
    with pytest.raises(ValueError):
        to_2tuple((1, 2, 3))
