"""The chain's one text form of a timestamp (what every chained envelope holds)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.chain import canonical_time, envelope_bytes

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


@given(
    st.datetimes(
        min_value=datetime(2, 1, 1),
        max_value=datetime(9998, 12, 31),
        timezones=st.one_of(st.just(UTC), _OFFSETS),
    ),
    st.sampled_from([0, 1, 999_999]),
)
def test_the_envelope_holds_the_canonical_time_whichever_way_it_is_written(
    moment: datetime, microsecond: int
) -> None:
    """envelope_bytes lets msgspec write UTC times with microseconds itself: the bytes
    must be exactly those of the canonical text, or every chain would change."""
    for when in (moment, moment.replace(microsecond=microsecond)):
        expected = msgspec.json.encode(["u", "s", "r", 7, "t", 1, canonical_time(when), "k_1"])
        assert envelope_bytes("u", "s", "r", 7, "t", 1, when, "k_1") == expected
