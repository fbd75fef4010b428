"""``node.inputs``: the batch fast path agrees with the field-by-field validation it stands in for."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from node import inputs
from node.errors import RequestError

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
    assert fast is None or fast == checked
    if checked is not None and all(type(op["id"]) is int and type(op["user"]) is int for op in ops):
        assert fast == checked  # plain ops never take the slow path
