"""Proposal recall, and reading/writing result files safely."""
import pickle

import numpy as np
import pytest

from detforge.evaluation.recalls import eval_recalls
from detforge.evaluation.results_io import check_results_match, dump_results, load_results
from detforge.registry import DetforgeError

GTS = [np.array([[0, 0, 10, 10], [20, 0, 30, 10]], np.float32)]


def test_recall_at_several_iou_thresholds_and_proposal_numbers():
    proposals = [np.array([[0, 0, 10, 10, 0.9],      # exact match of GT 0
                           [20, 0, 30, 14, 0.5]],    # IoU 100/140 = 0.714 with GT 1
                          np.float32)]
    recalls = eval_recalls(GTS, proposals, proposal_nums=[1, 2], iou_thrs=[0.5, 0.75],
                           logger='silent')
    np.testing.assert_allclose(recalls, [[0.5, 0.5], [1.0, 0.5]])


def test_one_proposal_covers_at_most_one_gt():
    proposals = [np.array([[0, 0, 30, 10, 0.9]], np.float32)]   # IoU 1/3 with both GTs
    recalls = eval_recalls(GTS, proposals, proposal_nums=[1], iou_thrs=[0.3], logger='silent')
    assert recalls[0, 0] == pytest.approx(0.5)


def test_proposals_are_ranked_by_score_before_the_cut():
    proposals = [np.array([[50, 50, 60, 60, 0.1], [0, 0, 10, 10, 0.8]], np.float32)]
    recalls = eval_recalls(GTS, proposals, proposal_nums=[1], iou_thrs=[0.5], logger='silent')
    assert recalls[0, 0] == pytest.approx(0.5)


def _results():
    rng = np.random.default_rng(0)
    return [[rng.random((3, 5)).astype(np.float32), np.zeros((0, 5), np.float32)]
            for _ in range(4)]


@pytest.mark.parametrize('suffix', ['.pkl', '.json'])
def test_results_round_trip(tmp_path, suffix):
    results = _results()
    path = tmp_path / f'results{suffix}'
    dump_results(results, path)
    loaded = load_results(path)
    assert len(loaded) == 4 and len(loaded[0]) == 2 and loaded[0][1].shape == (0, 5)
    np.testing.assert_allclose(loaded[2][0], results[2][0], atol=1e-3)


@pytest.mark.parametrize('protocol', [2, 4, 5])
def test_pickles_of_numpy_arrays_load_with_every_protocol(tmp_path, protocol):
    path = tmp_path / 'r.pkl'
    path.write_bytes(pickle.dumps(_results(), protocol=protocol))
    np.testing.assert_array_equal(load_results(path)[1][0], _results()[1][0])


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (exec, ('raise SystemExit("ran")',))
    path = tmp_path / 'evil.pkl'
    path.write_bytes(pickle.dumps([Payload()]))
    with pytest.raises(DetforgeError, match='refusing to load builtins.exec'):
        load_results(path)


def test_missing_or_broken_results_files_are_clear_errors(tmp_path):
    with pytest.raises(DetforgeError, match='results file not found'):
        load_results(tmp_path / 'none.pkl')
    bad = tmp_path / 'bad.json'
    bad.write_text('{not json')
    with pytest.raises(DetforgeError, match='not a valid JSON'):
        load_results(bad)


def test_check_results_match_names_the_mismatch():
    from types import SimpleNamespace
    dataset = SimpleNamespace(CLASSES=('a', 'b'), data_infos=[{}] * 4)
    check_results_match(dataset, _results())
    with pytest.raises(DetforgeError, match='hold 3 images but the test data set has 4'):
        check_results_match(dataset, _results()[:3])
    three = SimpleNamespace(CLASSES=('a', 'b', 'c'), data_infos=[{}] * 4)
    with pytest.raises(DetforgeError, match='has 2 classes but the data set has 3'):
        check_results_match(three, _results())
