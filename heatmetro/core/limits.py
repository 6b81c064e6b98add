"""Bounds on one record, apart from the stream contract's models.

Here so that reading the configuration does not build the contract's pydantic models
(a tenth of a snapshot's start-up): only ingest and import need those.
"""

# The bound on one record: 55 hours at 1 Hz. Every step after parsing is at most
# n log n in the fixes, so this bounds one activity's work (config: max_fixes_per_activity).
MAX_FIXES_PER_ACTIVITY = 200_000

# Dates an activity may start on (UTC), and its longest span of fixes: beyond them a
# record is a broken clock, not a ride, and its dates would overflow the calendar
# (the year 10000) in every later step. Fixed bounds, not "now": replays stay identical.
FIRST_START_YEAR = 1990
LAST_START_YEAR = 2099
MAX_DURATION_S = 30 * 24 * 3600

# The longest track one activity draws (metres, after cleaning and the privacy cuts): a
# 1,200 km randonnée (Paris-Brest-Paris) recorded as one activity fits. Without it, a
# device left recording for weeks at a plausible speed, one sparse fix every few hundred
# metres, filled the grid between its fixes into 12 million res-13 cells (3 GB to
# ingest, 6 GB to snapshot), however few fixes it had; at 5,000 km, three such athletes
# still took 2 minutes and 1.8 GB to publish. The fixes beyond are dropped and counted
# (``overlong_fixes``).
MAX_TRACK_M = 1_500_000.0

# How far after the wall clock a record's ``updated_at`` may lie (producers' clocks and
# a local time labelled UTC: up to 14 hours). A version from the future would outrank
# every real change after it, so a later deletion or opt-out would be ignored as stale.
MAX_FUTURE_S = 24 * 3600

# A pause (or a clock jump) longer than this splits a track: no line is drawn across a
# step whose time says the recorder was elsewhere meanwhile.
PAUSE_SPLIT_S = 300.0
