"""The calendar of the CityLearn 2022 data: the date and hour of each data row.

The files carry a ``Month``, an ``Hour`` (1-24, the hour *ending* at that time) and a
``Day Type`` (1 = Monday ... 7 = Sunday) per row, but no year and no daylight-saving
shift (``Daylight Savings Status`` is 0 in every row). Row 0 is "Month 7, Hour 24, Day
Type 7": the hour 23:00-24:00 of Sunday 31 July; row 1 is 00:00-01:00 of Monday
1 August. Of the years around the data's publication, a Monday 1 August followed by a
February of 28 days fits August 2016 to July 2017 (and again 2022-2023); we take
2016-2017 as the nominal calendar. :data:`ROW0_START` is that choice; the weekdays,
hours and months of the files hold for either span.

A step's ``datetime`` is the *start* of the hour it covers, in local standard time
(naive, no time zone). A run that goes past data row 8,759 wraps around to row 0 of the
data (``agents.fleet.data``) but its datetimes keep counting forward.

Pure domain code: numpy only.
"""

from __future__ import annotations

import numpy as np

#: start of the hour covered by CityLearn 2022 data row 0 (nominal year, see above)
ROW0_START = np.datetime64("2016-07-31T23:00:00", "s")
ROW_SECONDS = 3600  # the data are hourly


def row_datetimes(start_row: int, steps: np.ndarray | int) -> np.ndarray:
    """``datetime64[s]`` of the start of each step: data row ``start_row + t``.

    ``steps`` is an array of step indices ``t`` or a count (``t = 0 .. steps - 1``).
    """
    t = np.arange(int(steps)) if np.ndim(steps) == 0 else np.asarray(steps)
    if t.size and not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"step indices must be integers, got dtype {t.dtype}")
    if int(start_row) < 0:
        raise ValueError(f"start_row must be >= 0, got {start_row}")
    offset_s = (int(start_row) + t.astype(np.int64)) * ROW_SECONDS
    return ROW0_START + offset_s.astype("timedelta64[s]")
