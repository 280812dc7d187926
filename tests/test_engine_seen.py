"""The scan's memory of invoices handed out (`connector.sync.cursor.Seen`) answers as a
plain dict would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from connector.sync.cursor import Seen

_IDS = st.one_of(
    st.integers(min_value=0, max_value=10**6).map(str),
    st.sampled_from(["007", "0", "12a", "", "١٢", "9" * 25, "abc"]),
)
_TIMES = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["set", "default"]), _IDS, _TIMES), max_size=60))
def test_behaves_like_a_dict(operations: list[tuple[str, str, datetime]]) -> None:
    seen = Seen()
    model: dict[str, datetime] = {}
    for operation, kantata_id, when in operations:
        if operation == "set":
            seen[kantata_id] = when
            model[kantata_id] = when
        else:
            seen.setdefault(kantata_id, when)
            model.setdefault(kantata_id, when)
        assert seen.get(kantata_id) == model[kantata_id]
    assert len(seen) == len(model)
    for kantata_id, when in model.items():
        assert kantata_id in seen
        assert seen.get(kantata_id) == when
    assert "never-seen" not in seen
    assert seen.get("424242424") == model.get("424242424")


def test_ascending_ids_are_kept_in_the_arrays() -> None:
    seen = Seen()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for number in range(1, 1001):
        seen[str(number)] = start + timedelta(seconds=number)
    seen["500"] = start  # a second version of an earlier row: updated in place
    assert len(seen) == 1000
    assert not seen._other
    assert seen.get("500") == start
    assert seen.get("1000") == start + timedelta(seconds=1000)
    min_time = datetime.min.replace(tzinfo=UTC)
    seen.setdefault("1001", min_time)
    assert seen.get("1001") == min_time
