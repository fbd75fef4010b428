"""``node.http.inputs``: the batch fast path agrees with the field-by-field validation it stands in for."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from node.errors import RequestError
from node.http import inputs
from node.state.item import ItemKey

VALUES = st.one_of(
    st.sampled_from(["like", "unlike", "love", "post", "Post", "a" * 21, "", "+1", "7"]),
    st.integers(min_value=-2, max_value=2**64 + 1),
    st.sampled_from([0, 2**64 - 1, 2**53 + 1]),
    st.booleans(),
    st.floats(allow_nan=False),
    st.none(),
    st.lists(st.integers(), max_size=1),
)
OP = st.one_of(
    st.fixed_dictionaries(
        {
            "op": st.sampled_from(["like", "unlike"]),
            "type": st.sampled_from(["post", "video_2"]),
            "id": st.integers(0, 2**64 - 1),
            "user": st.integers(0, 2**64 - 1),
        }
    ),
    st.dictionaries(st.sampled_from(["op", "type", "id", "user", "extra"]), VALUES, max_size=5),
    VALUES,
)


@given(st.lists(OP, max_size=8))
def test_the_fast_path_agrees_with_the_checked_one(ops: list[Any]) -> None:
    fast = inputs._plain_batch(ops)
    try:
        checked: list[inputs.BatchOp] | None = inputs._checked_batch(ops)
    except RequestError:
        checked = None
    assert fast is None or (checked is not None and fast == inputs._columns(checked))
    if checked is not None and all(type(op["id"]) is int and type(op["user"]) is int for op in ops):
        assert fast is not None and fast.ops() == checked  # plain ops never take the slow path
    if checked is not None:
        batch = inputs._columns(checked)
        assert batch.keys == [op.key.to_bytes() for op in checked]
        assert batch.item_keys() == list(dict.fromkeys(op.key for op in checked))


def test_a_batch_of_several_types_keys_every_op() -> None:
    ops = [
        {"op": "like", "type": "post", "id": 1, "user": 5},
        {"op": "unlike", "type": "video_2", "id": 2**64 - 1, "user": 0},
        {"op": "like", "type": "post", "id": 1, "user": 6},
    ]
    batch = inputs.batch_request({"ops": ops}, 3)
    assert batch.liking == [True, False, True] and batch.users == [5, 0, 6]
    post, video = ItemKey("post", 1).to_bytes(), ItemKey("video_2", 2**64 - 1).to_bytes()
    assert batch.keys == [post, video, post]
    assert batch.item_keys() == [ItemKey("post", 1), ItemKey("video_2", 2**64 - 1)]
    assert len(batch) == 3 and len(inputs.batch_request({"ops": []}, 3)) == 0
