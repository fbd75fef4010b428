"""The checker of ``bench.faults`` on hand-made histories: it must see every kind of loss and
duplication it claims to, or a green fault run proves nothing."""

from __future__ import annotations

from bench.faults.checker import NodeItem, check, possible_states
from bench.faults.history import Op, Pair, error_code


def op(kind: str, outcome: str, node: str = "n1") -> Op:
    return Op(kind, node, outcome, 0.0, 0.0)  # type: ignore[arg-type]


def states(*per_node: dict[int, list[int]]) -> dict[str, dict[int, NodeItem]]:
    """Node states with counts that match their lists."""
    return {
        f"n{i + 1}": {item: NodeItem(users, len(set(users)), len(set(users))) for item, users in node.items()}
        for i, node in enumerate(per_node)
    }


def test_the_last_acknowledged_operation_decides_and_indeterminate_ones_stay_possible() -> None:
    assert possible_states(Pair(0, 1, "n1", [op("like", "ok")])) == {True}
    assert possible_states(Pair(0, 1, "n1", [op("like", "ok"), op("unlike", "ok")])) == {False}
    assert possible_states(Pair(0, 1, "n1", [op("like", "ok"), op("unlike", "fail")])) == {True}
    assert possible_states(Pair(0, 1, "n1", [op("like", "ok"), op("unlike", "info")])) == {True, False}
    assert possible_states(Pair(0, 1, None, [op("like", "fail")])) == {False}
    assert possible_states(Pair(0, 1, None, [op("like", "info"), op("like", "fail")])) == {True, False}


def test_a_clean_history_passes() -> None:
    pairs = [
        Pair(0, 1, "n1", [op("like", "ok")]),
        Pair(0, 2, "n2", [op("like", "ok"), op("unlike", "ok")]),
        Pair(1, 3, None, [op("like", "info")]),
        Pair(1, 4, None, [op("like", "fail")]),
    ]
    verdict = check(pairs, states({0: [1], 1: [3]}, {0: [1], 1: [3]}))
    assert verdict.ok and (verdict.lost, verdict.phantom) == (0, 0)
    assert (verdict.operations, verdict.acknowledged, verdict.failed, verdict.indeterminate) == (5, 3, 1, 1)


def test_an_acknowledged_like_missing_is_lost() -> None:
    pairs = [Pair(0, 1, "n1", [op("like", "ok")]), Pair(0, 2, "n1", [op("like", "ok")])]
    verdict = check(pairs, states({0: [2]}, {0: [2]}))
    assert verdict.lost == 1 and not verdict.ok
    assert "user 1" in verdict.examples["lost"][0]


def test_an_acknowledged_unlike_undone_is_a_phantom() -> None:
    pairs = [Pair(0, 1, "n1", [op("like", "ok"), op("unlike", "ok")])]
    assert check(pairs, states({0: [1]})).phantom == 1


def test_a_liker_never_attempted_or_only_failed_is_a_phantom() -> None:
    pairs = [Pair(0, 1, None, [op("like", "fail")])]
    verdict = check(pairs, states({0: [1, 99]}))
    assert verdict.phantom == 2
    assert any("never attempted" in example for example in verdict.examples["phantom"])


def test_a_count_off_its_set_a_liker_listed_twice_and_unequal_nodes_are_caught() -> None:
    pairs = [Pair(0, 1, None, [op("like", "ok")]), Pair(0, 2, None, [op("like", "ok")])]
    counted_twice = {"n1": {0: NodeItem([1, 2], 3, 3)}}  # a blind increment: count 3, two likers
    assert check(pairs, counted_twice).count_mismatches == 1
    batch_off = {"n1": {0: NodeItem([1, 2], 2, 1)}}
    assert check(pairs, batch_off).count_mismatches == 1
    listed_twice = {"n1": {0: NodeItem([1, 2, 2], 2, 2)}}
    assert check(pairs, listed_twice).duplicate_likers == 1
    unequal = states({0: [1, 2]}, {0: [1]})
    assert check(pairs, unequal).unequal_items == 1


def test_a_refused_write_never_happened_and_its_effect_showing_is_a_phantom() -> None:
    # 503 not_durable: the node says the write changed nothing, so it is held to that.
    assert possible_states(Pair(0, 1, None, [op("like", "refused")])) == {False}
    assert possible_states(Pair(0, 1, "n1", [op("like", "ok"), op("unlike", "refused")])) == {True}
    refused_like = Pair(0, 1, None, [op("like", "refused")])
    refused_unlike = Pair(0, 2, "n1", [op("like", "ok"), op("unlike", "refused")])
    verdict = check([refused_like, refused_unlike], states({0: [1]}))  # the like shows, the unlike took
    assert (verdict.phantom, verdict.refused_visible, verdict.lost, verdict.refused) == (2, 2, 0, 2)
    assert not verdict.ok
    assert any("user 2" in example for example in verdict.examples["refused_visible"])
    # Absent as they should be: nothing to report.
    assert check([refused_like, refused_unlike], states({0: [2]})).ok


def test_a_later_acknowledged_or_indeterminate_operation_explains_what_a_refused_one_did() -> None:
    redone = Pair(0, 1, None, [op("like", "refused"), op("like", "ok")])
    maybe = Pair(0, 2, None, [op("like", "refused"), op("like", "info")])
    verdict = check([redone, maybe], states({0: [1, 2]}))
    assert verdict.ok and verdict.refused_visible == 0
    # A refused like re-done by an acknowledged one, then an acknowledged unlike: the liker present is
    # a phantom, but not the refused like's.
    undone = Pair(0, 3, "n1", [op("like", "refused"), op("like", "ok"), op("unlike", "ok")])
    verdict = check([undone], states({0: [3]}))
    assert (verdict.phantom, verdict.refused_visible) == (1, 0)
    # Seen under the disk nemesis: a refused like, then an unlike acknowledged by a node that did not
    # hold it; the like came back from a peer. An acknowledged unlike does not excuse the refused like.
    history = [
        op("like", "ok"),
        op("unlike", "ok"),
        op("like", "refused"),
        op("unlike", "fail"),
        op("unlike", "ok"),
    ]
    verdict = check([Pair(0, 4, "n1", history)], states({0: [4]}))
    assert (verdict.phantom, verdict.refused_visible) == (1, 1)


def test_only_not_durable_among_the_503s_is_a_refusal() -> None:
    assert error_code(b'{"error": {"code": "not_durable", "message": "disk"}}') == "not_durable"
    assert error_code(b'{"error": {"code": "write_timeout", "message": "peers"}}') == "write_timeout"
    assert error_code(b"<html>Service Unavailable</html>") is None
    assert error_code(b"[1, 2]") is None and error_code(b'{"error": "x"}') is None
