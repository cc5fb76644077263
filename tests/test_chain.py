"""The chain's one text form of a timestamp (what every chained envelope holds)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.chain import canonical_time

_OFFSETS = st.integers(min_value=-23 * 60, max_value=23 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)


@given(
    st.datetimes(
        min_value=datetime(2, 1, 1),
        max_value=datetime(9998, 12, 31),
        timezones=st.one_of(st.just(UTC), _OFFSETS),
    )
)
def test_canonical_time_is_utc_to_the_microsecond_with_a_z(moment: datetime) -> None:
    u = moment.astimezone(UTC)
    expected = (
        f"{u.year:04d}-{u.month:02d}-{u.day:02d}T{u.hour:02d}:{u.minute:02d}:"
        f"{u.second:02d}.{u.microsecond:06d}Z"
    )
    assert canonical_time(moment) == expected


def test_whole_seconds_keep_their_microseconds_and_naive_times_are_refused() -> None:
    assert canonical_time(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == (
        "2026-01-02T03:04:05.000000Z"
    )
    with pytest.raises(ValueError, match="timezone-aware"):
        canonical_time(datetime(2026, 1, 2))
