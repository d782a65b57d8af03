"""Session-parallel mini-batches against the hand-drawn example, and transitions."""
import numpy as np
import pytest

from course_lib.seqdata import (as_sessions, count_session_parallel_steps, session_parallel_batches,
                                transitions)

SESSIONS = [[1, 2, 3, 4], [5, 6], [7, 8, 9], [10, 11], [12, 13, 14]]


def test_session_parallel_matches_the_hand_drawn_example():
    # lanes:     lane 0: s1 (1 2 3 4) ...............
    #            lane 1: s2 (5 6) | s4 (10 11) | s5 (12 13 14)
    #            lane 2: s3 (7 8 9) | idle
    expected = [
        ([1, 5, 7], [2, 6, 8], [True, True, True]),
        ([2, 10, 8], [3, 11, 9], [False, True, False]),
        ([3, 12, 0], [4, 13, 0], [False, True, True]),
        ([0, 13, 0], [0, 14, 0], [True, False, True]),
    ]
    got = [(i.tolist(), t.tolist(), r.tolist()) for i, t, r in session_parallel_batches(SESSIONS, 3)]
    assert got == expected
    assert count_session_parallel_steps(SESSIONS, 3) == 4


def brute_force_pairs(sessions):
    return sorted((s[t], s[t + 1]) for s in sessions for t in range(len(s) - 1))


@pytest.mark.parametrize("batch_size", [1, 2, 4, 50])
def test_every_transition_appears_exactly_once(batch_size):
    rng = np.random.default_rng(batch_size)
    sessions = [rng.integers(1, 100, size=rng.integers(1, 9)) for _ in range(30)]  # some of length 1: skipped
    pairs, lane_of = [], {}
    for inputs, targets, reset in session_parallel_batches(sessions, batch_size, shuffle=True, seed=3):
        assert inputs.shape == targets.shape == reset.shape == (batch_size,)
        assert ((inputs == 0) == (targets == 0)).all()
        assert reset[inputs == 0].all(), "idle lanes must be reset"
        pairs += [(int(a), int(b)) for a, b in zip(inputs, targets) if a > 0]
    assert sorted(pairs) == brute_force_pairs([s.tolist() for s in sessions])
    steps_one_lane = count_session_parallel_steps(sessions, 1)
    assert steps_one_lane == len(pairs)


def test_chained_inputs_within_a_lane():
    # inside a lane, without a reset, this step's input is the previous step's target
    prev = None
    for inputs, targets, reset in session_parallel_batches(SESSIONS * 3, 4, shuffle=True, seed=0):
        if prev is not None:
            keep = ~reset
            assert (inputs[keep] == prev[keep]).all()
        prev = targets


def test_edge_cases():
    assert list(session_parallel_batches([], 3)) == []
    assert list(session_parallel_batches([[5]], 3)) == []
    with pytest.raises(ValueError, match="batch_size"):
        next(session_parallel_batches(SESSIONS, 0))
    assert [len(s) for s in as_sessions([[1], [1, 2], [], [3, 4, 5]])] == [2, 3]


def test_transitions_never_cross_histories():
    prev, nxt = transitions([np.array([1, 2, 3]), np.array([4]), np.array([5, 6]), np.array([])])
    assert prev.tolist() == [1, 2, 5] and nxt.tolist() == [2, 3, 6]
    p, n = transitions([])
    assert len(p) == len(n) == 0
