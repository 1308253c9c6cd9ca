"""The data's calendar: every row's datetime agrees with the files' Month, Hour and
Day Type columns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from agents.fleet.calendar import ROW0_START, row_datetimes
from agents.fleet.data import DEFAULT_CITYLEARN_DIR

ROWS = 8760


@pytest.mark.parametrize("building", ["Building_1", "Building_17"])
def test_every_row_matches_the_files_month_hour_and_day_type(building: str):
    cols = pd.read_csv(DEFAULT_CITYLEARN_DIR / f"{building}.csv",
                       usecols=["Month", "Hour", "Day Type"])
    when = pd.DatetimeIndex(row_datetimes(0, ROWS))
    assert len(cols) == ROWS
    # "Hour h" is the hour ending at h:00; its start is h - 1 (Hour 24: 23:00 that day)
    np.testing.assert_array_equal(when.hour + 1, cols["Hour"].to_numpy())
    np.testing.assert_array_equal(when.month, cols["Month"].to_numpy())
    # Day Type 1..7 = Monday..Sunday (8, holidays, does not occur in these files)
    np.testing.assert_array_equal(when.dayofweek + 1, cols["Day Type"].to_numpy())


def test_steps_and_start_rows():
    assert row_datetimes(0, 1)[0] == ROW0_START == np.datetime64("2016-07-31T23:00")
    np.testing.assert_array_equal(row_datetimes(1, np.array([0, 24])),
                                  np.array(["2016-08-01T00:00", "2016-08-02T00:00"],
                                           dtype="datetime64[s]"))
    # past the last data row the datetimes keep counting (the data wrap, time does not)
    assert row_datetimes(ROWS, 1)[0] == ROW0_START + np.timedelta64(365, "D")
    assert row_datetimes(5, 0).size == 0
    with pytest.raises(ValueError, match="start_row"):
        row_datetimes(-1, 3)
    with pytest.raises(ValueError, match="integers"):
        row_datetimes(0, np.array([0.5]))
