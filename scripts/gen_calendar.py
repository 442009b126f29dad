"""Regenerate core/data/cn_calendar.toml from the `chinesecalendar` package (PyPI, 1.11).

Not run by the tests: the data file is committed, and `it::calendar` checks three years of it
against the State Council notices written out by hand. Run it when a new year's notice is out
and the package has it:  python3 -m venv /tmp/cc && /tmp/cc/bin/pip install chinesecalendar &&
/tmp/cc/bin/python scripts/gen_calendar.py > core/data/cn_calendar.toml
"""

from collections import defaultdict

import chinese_calendar
from chinese_calendar import constants

off = defaultdict(list)
work = defaultdict(list)
for d in sorted(constants.holidays):
    off[d.year].append(d)
for d in sorted(constants.workdays):
    work[d.year].append(d)

print("# Chinese statutory holidays and adjusted working days (调休), one table per year.")
print("#")
print("# A date is a working day when it is Monday-Friday and not in `off`, or when it is in `work`")
print("# (a weekend day made a working day). Each year follows the State Council General Office's")
print("# notice on that year's holidays (国务院办公厅关于{year}年部分节假日安排的通知, www.gov.cn,")
print("# published in the autumn of the year before). Transcribed from the `chinesecalendar`")
print(f"# package {chinese_calendar.__version__} (chinese_calendar/constants.py) by")
print("# scripts/gen_calendar.py; 2024, 2025 and 2026 are checked day by day against the notices")
print("# in core/tests/it/calendar.rs. Years after the last one here are added by an operator")
print("# (`govshare calendar add`), a recorded act; a deadline in a year not covered is an error.")
for y in sorted(set(off) | set(work)):
    print()
    print("[[year]]")
    print(f"year = {y}")
    print(f'source = "国务院办公厅关于{y}年部分节假日安排的通知"')
    print("off = [" + ", ".join(f'"{d:%m-%d}"' for d in off[y]) + "]")
    print("work = [" + ", ".join(f'"{d:%m-%d}"' for d in work[y]) + "]")
