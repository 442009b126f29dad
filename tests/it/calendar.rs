//! The working-day calendar against the State Council's notices, and deadline arithmetic on
//! known dates across Spring Festival and National Day.
//!
//! The notices below are written out by hand from the texts published on www.gov.cn (国务院
//! 办公厅关于2024年/2025年/2026年部分节假日安排的通知, published in October 2023, November
//! 2024 and November 2025), independently of the shipped data file (which was transcribed
//! from the `chinesecalendar` package): every day of each year must agree.

use chrono::{Datelike, NaiveDate, Weekday};
use govshare_core::calendar::{WorkCalendar, YearTable};

fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date")
}

/// One notice: the days-off ranges ("放假调休，共N天", inclusive) and the weekend days worked
/// ("X月X日（周X）上班").
struct Notice {
    year: i32,
    off: &'static [(&'static str, &'static str)],
    work: &'static [&'static str],
}

const NOTICES: &[Notice] = &[
    Notice {
        year: 2024,
        off: &[
            ("2024-01-01", "2024-01-01"), // 元旦：1月1日放假，与周末连休
            ("2024-02-10", "2024-02-17"), // 春节：2月10日至17日放假调休，共8天
            ("2024-04-04", "2024-04-06"), // 清明节：4月4日至6日放假调休，共3天
            ("2024-05-01", "2024-05-05"), // 劳动节：5月1日至5日放假调休，共5天
            ("2024-06-10", "2024-06-10"), // 端午节：6月10日放假，与周末连休
            ("2024-09-15", "2024-09-17"), // 中秋节：9月15日至17日放假调休，共3天
            ("2024-10-01", "2024-10-07"), // 国庆节：10月1日至7日放假调休，共7天
        ],
        // 2月4日（星期日）、2月18日（星期日）、4月7日（星期日）、4月28日（星期日）、
        // 5月11日（星期六）、9月14日（星期六）、9月29日（星期日）、10月12日（星期六）上班
        work: &[
            "2024-02-04",
            "2024-02-18",
            "2024-04-07",
            "2024-04-28",
            "2024-05-11",
            "2024-09-14",
            "2024-09-29",
            "2024-10-12",
        ],
    },
    Notice {
        year: 2025,
        off: &[
            ("2025-01-01", "2025-01-01"), // 元旦：1月1日（周三）放假1天
            ("2025-01-28", "2025-02-04"), // 春节：1月28日（除夕）至2月4日放假调休，共8天
            ("2025-04-04", "2025-04-06"), // 清明节：4月4日至6日放假，共3天
            ("2025-05-01", "2025-05-05"), // 劳动节：5月1日至5日放假调休，共5天
            ("2025-05-31", "2025-06-02"), // 端午节：5月31日至6月2日放假，共3天
            ("2025-10-01", "2025-10-08"), // 国庆节、中秋节：10月1日至8日放假调休，共8天
        ],
        // 1月26日（周日）、2月8日（周六）、4月27日（周日）、9月28日（周日）、10月11日（周六）上班
        work: &[
            "2025-01-26",
            "2025-02-08",
            "2025-04-27",
            "2025-09-28",
            "2025-10-11",
        ],
    },
    Notice {
        year: 2026,
        off: &[
            ("2026-01-01", "2026-01-03"), // 元旦：1月1日（周四）至3日放假调休，共3天
            ("2026-02-15", "2026-02-23"), // 春节：2月15日（腊月二十八）至23日放假调休，共9天
            ("2026-04-04", "2026-04-06"), // 清明节：4月4日至6日放假，共3天
            ("2026-05-01", "2026-05-05"), // 劳动节：5月1日至5日放假调休，共5天
            ("2026-06-19", "2026-06-21"), // 端午节：6月19日至21日放假，共3天
            ("2026-09-25", "2026-09-27"), // 中秋节：9月25日至27日放假，共3天
            ("2026-10-01", "2026-10-07"), // 国庆节：10月1日至7日放假调休，共7天
        ],
        // 1月4日（周日）、2月14日（周六）、2月28日（周六）、5月9日（周六）、
        // 9月20日（周日）、10月10日（周六）上班
        work: &[
            "2026-01-04",
            "2026-02-14",
            "2026-02-28",
            "2026-05-09",
            "2026-09-20",
            "2026-10-10",
        ],
    },
];

#[test]
fn every_day_of_2024_2025_and_2026_matches_the_state_council_notices() {
    let cal = WorkCalendar::builtin();
    for n in NOTICES {
        let mut day = d(&format!("{}-01-01", n.year));
        let mut working = 0;
        while day.year() == n.year {
            let off = n.off.iter().any(|(a, b)| d(a) <= day && day <= d(b));
            let worked_weekend = n.work.iter().any(|w| d(w) == day);
            let weekend = matches!(day.weekday(), Weekday::Sat | Weekday::Sun);
            let expected = worked_weekend || (!weekend && !off);
            assert_eq!(
                cal.is_working_day(day).expect("covered"),
                expected,
                "{day} ({:?})",
                day.weekday()
            );
            working += usize::from(expected);
            day = day.succ_opt().expect("next");
        }
        // A year has about 250 working days; a transcription that lost a block would not.
        assert!((245..=252).contains(&working), "{}: {working}", n.year);
    }
}

#[test]
fn deadlines_count_working_days_across_spring_festival_and_national_day() {
    let cal = WorkCalendar::builtin();
    let due = |from: &str, n: u32| cal.add_working_days(d(from), n).expect("due").to_string();
    // 2025: Monday 27 January is the last working day before Spring Festival (off 28 Jan - 4
    // Feb); Sunday 26 January and Saturday 8 February are worked.
    assert_eq!(due("2025-01-27", 3), "2025-02-07"); // 5, 6, 7 February
    assert_eq!(due("2025-01-27", 5), "2025-02-10"); // ..., Sat 8 (worked), Mon 10
    assert_eq!(due("2025-01-24", 3), "2025-02-05"); // Sun 26, Mon 27, then 5 February
    // Received on a holiday: counting starts on the next working day.
    assert_eq!(due("2025-01-30", 1), "2025-02-05");
    // 2025: Tuesday 30 September before National Day and Mid-autumn (off 1-8 October), with
    // Saturday 11 October worked.
    assert_eq!(due("2025-09-30", 3), "2025-10-11"); // Thu 9, Fri 10, Sat 11
    assert_eq!(due("2025-09-30", 7), "2025-10-16");
    assert_eq!(due("2025-09-26", 2), "2025-09-29"); // Sun 28 (worked), Mon 29
    // 2026: Friday 13 February, then Saturday 14 worked, Spring Festival 15-23, Saturday 28
    // worked.
    assert_eq!(due("2026-02-13", 1), "2026-02-14");
    assert_eq!(due("2026-02-13", 5), "2026-02-27"); // 14, 24, 25, 26, 27
    assert_eq!(due("2026-02-13", 6), "2026-02-28");
    // 2026 National Day: Wednesday 30 September, off 1-7 October, Saturday 10 worked.
    assert_eq!(due("2026-09-30", 3), "2026-10-10"); // Thu 8, Fri 9, Sat 10
    assert_eq!(due("2026-09-30", 10), "2026-10-20");
    // The Hebi objection deadline with its one extension: 10 + 10 working days from an
    // objection received on Thursday 24 September 2026 (Mid-autumn 25-27 September, National
    // Day 1-7 October, Saturday 10 October worked).
    let first = cal.add_working_days(d("2026-09-24"), 10).expect("due");
    assert_eq!(first.to_string(), "2026-10-15");
    assert_eq!(
        cal.add_working_days(first, 10).expect("ext").to_string(),
        "2026-10-29"
    );
    // Lateness is counted in working days too.
    assert_eq!(
        cal.working_days_between(d("2025-01-27"), d("2025-02-05"))
            .expect("n"),
        1
    );
}

#[test]
fn a_deadline_in_a_year_without_data_is_an_error_and_an_added_year_fixes_it() {
    let cal = WorkCalendar::builtin();
    let e = cal
        .add_working_days(d("2026-12-28"), 5)
        .expect_err("2027 not covered");
    assert!(e.to_string().contains("no data for 2027"), "{e}");
    // An operator adds 2027 from its notice (here a made-up one: New Year 1-3 January).
    let y2027 = YearTable {
        year: 2027,
        source: "国务院办公厅关于2027年部分节假日安排的通知 (test)".into(),
        off: vec!["01-01".into()],
        work: vec![],
    };
    let cal = cal.with_years(&[y2027]).expect("added");
    // Mon 28, Tue 29, Wed 30, Thu 31 December 2026; Friday 1 January 2027 is off; Mon 4.
    assert_eq!(
        cal.add_working_days(d("2026-12-25"), 5)
            .expect("due")
            .to_string(),
        "2027-01-04"
    );
}
