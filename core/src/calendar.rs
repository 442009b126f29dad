//! Working days (工作日) and the clock deadlines are counted by.
//!
//! The regulations give deadlines in working days: an approval within 3 (Hunan §21), 5 (Hebi
//! §15, Huarong §21) or 7 (Luyi §11), an answer to an objection within 5 (Hunan §21(4)) or 10
//! (Hebi §13). A working day in China is not "Monday to Friday": statutory holidays are off,
//! and some weekend days are worked instead (调休) — each year by the State Council's notice.
//! [`WorkCalendar`] keeps those notices as data: the years 2004-2026 are shipped in
//! `data/cn_calendar.toml` (see its header for the sources), and an operator adds later years
//! as a recorded act of the store. A day in a year the calendar does not cover is an error that
//! says so — never a guess that might make a deadline fall on a holiday.
//!
//! Counting follows the usual rule for administrative periods: the day something is received
//! does not count; the deadline is the end of the n-th working day after it, Beijing time.
//!
//! The [`Clock`] is injectable so that tests (and simulations) can move time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Datelike, Duration, FixedOffset, NaiveDate, Utc, Weekday};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where time comes from for deadlines, expiry and the records of workflow transitions.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that stands still until it is moved: for tests and simulations of deadlines.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl ManualClock {
    /// A clock showing `at`.
    pub fn new(at: DateTime<Utc>) -> ManualClock {
        ManualClock(Arc::new(Mutex::new(at)))
    }

    /// Show `at` from now on.
    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }

    /// Move forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *t += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Beijing time (UTC+8, no daylight saving): the time zone deadlines are counted in.
pub fn beijing() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).unwrap_or_else(|| FixedOffset::east_opt(0).expect("zero"))
}

/// The Beijing calendar date of an instant.
pub fn beijing_date(t: DateTime<Utc>) -> NaiveDate {
    t.with_timezone(&beijing()).date_naive()
}

/// One year's notice: the days off (holidays, with the weekend days inside a holiday block)
/// and the weekend days worked (调休), as `MM-DD`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct YearTable {
    /// The year.
    pub year: i32,
    /// The notice it follows.
    pub source: String,
    /// Days off that would otherwise be working days (and the weekends of holiday blocks).
    pub off: Vec<String>,
    /// Weekend days that are working days.
    #[serde(default)]
    pub work: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CalendarFile {
    year: Vec<YearTable>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Year {
    off: BTreeSet<NaiveDate>,
    work: BTreeSet<NaiveDate>,
}

/// The Chinese working-day calendar for the years it has notices for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkCalendar {
    years: BTreeMap<i32, Year>,
}

const BUILTIN: &str = include_str!("../data/cn_calendar.toml");

/// The longest deadline counted, in working days: far beyond any the regulations give, it
/// keeps a mistyped count from walking the calendar for ever.
pub const MAX_WORKING_DAYS: u32 = 250;

impl WorkCalendar {
    /// The shipped calendar, 2004-2026.
    pub fn builtin() -> WorkCalendar {
        let tables = WorkCalendar::parse(BUILTIN).expect("the shipped calendar parses");
        WorkCalendar {
            years: BTreeMap::new(),
        }
        .with_years(&tables)
        .expect("the shipped calendar is consistent")
    }

    /// Parse a calendar file (`[[year]]` tables, the shape of `data/cn_calendar.toml`).
    pub fn parse(text: &str) -> Result<Vec<YearTable>> {
        let f: CalendarFile = toml::from_str(text)
            .map_err(|e| Error::invalid(format!("calendar file: {}", e.message())))?;
        Ok(f.year)
    }

    /// This calendar with `tables` added; a table for a year already covered replaces it (a
    /// later notice, or a correction).
    pub fn with_years(mut self, tables: &[YearTable]) -> Result<WorkCalendar> {
        for t in tables {
            self.years.insert(t.year, Year::check(t)?);
        }
        Ok(self)
    }

    /// The years covered, ascending.
    pub fn years(&self) -> Vec<i32> {
        self.years.keys().copied().collect()
    }

    fn year(&self, d: NaiveDate) -> Result<&Year> {
        self.years.get(&d.year()).ok_or_else(|| {
            let (first, last) = (
                self.years.keys().next().copied().unwrap_or_default(),
                self.years.keys().next_back().copied().unwrap_or_default(),
            );
            Error::invalid(format!(
                "the working-day calendar has no data for {}: it covers {first}-{last}; an operator adds a year from the State Council's notice (`govshare calendar add`) before deadlines in it can be counted",
                d.year()
            ))
        })
    }

    /// Whether `d` is a working day; an error when its year is not covered.
    pub fn is_working_day(&self, d: NaiveDate) -> Result<bool> {
        let y = self.year(d)?;
        if y.work.contains(&d) {
            return Ok(true);
        }
        let weekend = matches!(d.weekday(), Weekday::Sat | Weekday::Sun);
        Ok(!weekend && !y.off.contains(&d))
    }

    /// The `n`-th working day after `from` (`from` itself never counts): the last day of a
    /// period of `n` working days starting on `from`.
    pub fn add_working_days(&self, from: NaiveDate, n: u32) -> Result<NaiveDate> {
        if n == 0 || n > MAX_WORKING_DAYS {
            return Err(Error::invalid(format!(
                "a period of {n} working days: periods run from 1 to {MAX_WORKING_DAYS}"
            )));
        }
        let mut d = from;
        let mut left = n;
        while left > 0 {
            d = d
                .succ_opt()
                .ok_or_else(|| Error::invalid("date out of range"))?;
            if self.is_working_day(d)? {
                left -= 1;
            }
        }
        Ok(d)
    }

    /// Working days after `from` up to and including `to` (0 when `to <= from`): how late
    /// something due on `from` is on `to`.
    pub fn working_days_between(&self, from: NaiveDate, to: NaiveDate) -> Result<u32> {
        let mut n = 0;
        let mut d = from;
        while d < to {
            d = d
                .succ_opt()
                .ok_or_else(|| Error::invalid("date out of range"))?;
            if self.is_working_day(d)? {
                n += 1;
            }
        }
        Ok(n)
    }
}

impl Year {
    fn check(t: &YearTable) -> Result<Year> {
        if !(1949..=2200).contains(&t.year) {
            return Err(Error::invalid(format!(
                "calendar year {} is out of range",
                t.year
            )));
        }
        if t.source.trim().is_empty() {
            return Err(Error::invalid(format!(
                "calendar year {}: name the notice it follows (source)",
                t.year
            )));
        }
        let dates = |list: &[String], what: &str| -> Result<BTreeSet<NaiveDate>> {
            list.iter()
                .map(|s| {
                    NaiveDate::parse_from_str(&format!("{}-{s}", t.year), "%Y-%m-%d").map_err(
                        |_| {
                            Error::invalid(format!(
                                "calendar year {}: '{s}' in {what} is not a date of that year (MM-DD)",
                                t.year
                            ))
                        },
                    )
                })
                .collect()
        };
        let off = dates(&t.off, "off")?;
        let work = dates(&t.work, "work")?;
        if let Some(d) = off.intersection(&work).next() {
            return Err(Error::invalid(format!(
                "calendar year {}: {d} is both off and worked",
                t.year
            )));
        }
        if let Some(d) = work
            .iter()
            .find(|d| !matches!(d.weekday(), Weekday::Sat | Weekday::Sun))
        {
            return Err(Error::invalid(format!(
                "calendar year {}: {d} is listed as an adjusted working day but is a weekday",
                t.year
            )));
        }
        Ok(Year { off, work })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date")
    }

    #[test]
    fn shipped_calendar_covers_2004_to_2026() {
        let c = WorkCalendar::builtin();
        assert_eq!(c.years(), (2004..=2026).collect::<Vec<_>>());
    }

    #[test]
    fn a_year_without_data_is_an_error_not_a_guess() {
        let c = WorkCalendar::builtin();
        let e = c
            .add_working_days(d("2026-12-30"), 5)
            .expect_err("2027 is not covered");
        assert!(e.to_string().contains("no data for 2027"), "{e}");
        assert!(c.is_working_day(d("2003-06-02")).is_err());
    }

    #[test]
    fn bad_tables_are_refused() {
        let bad = |off: &[&str], work: &[&str]| {
            Year::check(&YearTable {
                year: 2030,
                source: "test".into(),
                off: off.iter().map(|s| s.to_string()).collect(),
                work: work.iter().map(|s| s.to_string()).collect(),
            })
        };
        assert!(bad(&["02-30"], &[]).is_err());
        assert!(bad(&["01-05"], &["01-05"]).is_err());
        // 2030-01-07 is a Monday: it cannot be an adjusted working weekend day.
        assert!(bad(&[], &["01-07"]).is_err());
        assert!(bad(&["01-01"], &["01-05"]).is_ok());
    }
}
