//! Identifier validation: GB 11643 citizen IDs, GB 32100 unified social credit codes,
//! GB/T 2260 region codes and calendar dates.
//!
//! Every rejection is an [`IdError`] naming the rule that failed, so a rejects file tells a
//! provider exactly what to fix.
//!
//! ```
//! use govshare_core::ident::{validate_citizen_id, validate_uscc, IdError};
//! let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 22).unwrap();
//! assert_eq!(validate_citizen_id("11010519491231002x", today).unwrap().id, "11010519491231002X");
//! assert_eq!(validate_citizen_id("632123820927051", today).unwrap().id, "632123198209270518");
//! assert!(matches!(validate_citizen_id("110105194912310021", today), Err(IdError::CheckCharacter { .. })));
//! assert!(validate_uscc("91110000600037341L").is_ok());
//! assert!(matches!(validate_uscc("123456789012345678"), Err(IdError::OrgCodeCheck { .. })));
//! ```

use chrono::{Datelike, NaiveDate};

/// Why an identifier was rejected. Each variant is one rule of the standard.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// Wrong number of characters.
    #[error("length is {actual}, expected {expected}")]
    Length {
        /// Characters found.
        actual: usize,
        /// What the standard requires.
        expected: &'static str,
    },
    /// A character outside the allowed set at a position (1-based).
    #[error("character at position {position} is not allowed ({allowed})")]
    Character {
        /// 1-based position.
        position: usize,
        /// Description of the allowed set.
        allowed: &'static str,
    },
    /// Region code format (GB/T 2260): six digits with a known province prefix.
    #[error("region code: {0}")]
    Region(&'static str),
    /// The embedded birth date is not a real calendar date. The digits are kept for the
    /// caller; the message leaves them out, since rejects files travel.
    #[error("birth date (positions 7-14) is not a real calendar date")]
    Date(String),
    /// The embedded birth date lies in the future (digits kept, not shown, as for `Date`).
    #[error("birth date (positions 7-14) is in the future")]
    FutureDate(String),
    /// The final check character does not match (GB 11643 mod 11-2, or GB 32100 mod 31).
    #[error("check character is {found}, expected {expected}")]
    CheckCharacter {
        /// The character present.
        found: char,
        /// The character the check formula gives.
        expected: char,
    },
    /// The GB 11714 organisation-code check inside a USCC (position 17) does not match.
    #[error("organisation code check character (position 17) is {found}, expected {expected}")]
    OrgCodeCheck {
        /// The character present.
        found: char,
        /// The character the GB 11714 formula gives.
        expected: char,
    },
    /// The registration authority / organisation category pair is not defined.
    #[error("registration authority '{authority}' has no organisation category '{category}'")]
    Category {
        /// Position 1.
        authority: char,
        /// Position 2.
        category: char,
    },
}

/// A validated citizen ID with what it encodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CitizenId {
    /// The normalised 18-character ID (upper-case check character; 15-digit input converted).
    pub id: String,
    /// Birth date encoded in positions 7-14.
    pub birth_date: NaiveDate,
    /// GB/T 2261.1 sex code implied by the sequence number: "1" male (odd), "2" female (even).
    pub sex_code: &'static str,
}

const CID_WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const CID_CHECK: &[u8; 11] = b"10X98765432";

/// GB 11643 check character for the first 17 digits (ASCII digits assumed).
pub fn citizen_id_check(first17: &[u8]) -> char {
    let s: u32 = first17
        .iter()
        .zip(CID_WEIGHTS)
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    CID_CHECK[(s % 11) as usize] as char
}

/// Province-level prefixes of GB/T 2260 (including Taiwan, Hong Kong and Macao).
const PROVINCES: [&str; 34] = [
    "11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37", "41",
    "42", "43", "44", "45", "46", "50", "51", "52", "53", "54", "61", "62", "63", "64", "65", "71",
    "81", "82",
];

/// Check the format of a GB/T 2260 region code: six digits, a known province prefix.
///
/// Existence in the current table is deliberately *not* required: an ID keeps the code of the
/// place of first registration, which may since have been abolished.
pub fn validate_region_code(code: &str) -> Result<(), IdError> {
    let b = code.as_bytes();
    if b.len() != 6 {
        return Err(IdError::Length {
            actual: code.chars().count(),
            expected: "6",
        });
    }
    if let Some(p) = b.iter().position(|c| !c.is_ascii_digit()) {
        return Err(IdError::Character {
            position: p + 1,
            allowed: "digits",
        });
    }
    if !PROVINCES.contains(&&code[..2]) {
        return Err(IdError::Region("unknown province prefix"));
    }
    Ok(())
}

/// Validate (and normalise) a citizen ID against GB 11643.
///
/// Accepts a lower-case `x`, and legacy 15-digit numbers (GB 11643-1989), which are converted
/// to 18 characters. `today` bounds the birth date.
pub fn validate_citizen_id(raw: &str, today: NaiveDate) -> Result<CitizenId, IdError> {
    let (id, birth_date) = normalize_citizen_id(raw, today)?;
    let seq = id[16] - b'0';
    Ok(CitizenId {
        sex_code: if seq % 2 == 1 { "1" } else { "2" },
        birth_date,
        // All ASCII (checked): this cannot fail, but never panic on input.
        id: String::from_utf8(id.to_vec()).map_err(|_| IdError::Character {
            position: 1,
            allowed: "ASCII",
        })?,
    })
}

/// [`validate_citizen_id`] without allocating: the normalised 18 bytes and the birth date.
/// A load checks ten million IDs; most are already normalised, and their column is then kept
/// as it is.
pub fn normalize_citizen_id(raw: &str, today: NaiveDate) -> Result<([u8; 18], NaiveDate), IdError> {
    let b = raw.as_bytes();
    let mut id = [0u8; 18];
    match b.len() {
        18 => id.copy_from_slice(b),
        15 => {
            if let Some(p) = b.iter().position(|c| !c.is_ascii_digit()) {
                return Err(IdError::Character {
                    position: p + 1,
                    allowed: "digits",
                });
            }
            // Sequence 996-999 marked centenarians born in the 1800s.
            let century: &[u8] = if matches!(&b[12..15], b"996" | b"997" | b"998" | b"999") {
                b"18"
            } else {
                b"19"
            };
            id[..6].copy_from_slice(&b[..6]);
            id[6..8].copy_from_slice(century);
            id[8..17].copy_from_slice(&b[6..15]);
            id[17] = citizen_id_check(&id[..17]) as u8;
        }
        _ => {
            return Err(IdError::Length {
                actual: raw.chars().count(),
                expected: "18 (or legacy 15)",
            });
        }
    }
    if let Some(p) = id[..17].iter().position(|c| !c.is_ascii_digit()) {
        return Err(IdError::Character {
            position: p + 1,
            allowed: "digits",
        });
    }
    if id[17] == b'x' {
        id[17] = b'X';
    }
    if !(id[17].is_ascii_digit() || id[17] == b'X') {
        return Err(IdError::Character {
            position: 18,
            allowed: "digit or X",
        });
    }
    // ASCII digits (checked above): valid UTF-8.
    let region = std::str::from_utf8(&id[..6]).map_err(|_| IdError::Character {
        position: 1,
        allowed: "ASCII",
    })?;
    validate_region_code(region)?;
    let ymd = || String::from_utf8_lossy(&id[6..14]).into_owned();
    let birth_date = citizen_id_birth_date(&id)
        .filter(|d| d.year() >= 1800)
        .ok_or_else(|| IdError::Date(ymd()))?;
    if birth_date > today {
        return Err(IdError::FutureDate(ymd()));
    }
    let expected = citizen_id_check(&id[..17]);
    let found = id[17] as char;
    if found != expected {
        return Err(IdError::CheckCharacter { found, expected });
    }
    Ok((id, birth_date))
}

/// The date in positions 7-14 (`YYYYMMDD`) of an 18-character citizen ID, if those are
/// digits naming a real date. Read digit by digit: a load reads ten million of them, and a
/// format-string parser costs more than the rest of the ID's checks.
pub fn citizen_id_birth_date(id: &[u8]) -> Option<NaiveDate> {
    let digits = id.get(6..14)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let num = |r: std::ops::Range<usize>| {
        digits[r]
            .iter()
            .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'))
    };
    NaiveDate::from_ymd_opt(num(0..4) as i32, num(4..6), num(6..8))
}

/// The GB 32100 alphabet: digits and upper-case letters without I, O, Z, S, V.
pub const USCC_ALPHABET: &[u8; 31] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
const USCC_WEIGHTS: [u32; 17] = [
    1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28,
];
const ORG_WEIGHTS: [u32; 8] = [3, 7, 9, 10, 5, 8, 4, 2];

fn uscc_index(c: u8) -> Option<u32> {
    USCC_ALPHABET.iter().position(|&a| a == c).map(|p| p as u32)
}

/// GB 11714 check character for the 8-character organisation code body (positions 9-16).
pub fn org_code_check(body: &[u8]) -> Option<char> {
    let mut s = 0u32;
    for (c, w) in body.iter().zip(ORG_WEIGHTS) {
        let v = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return None,
        };
        s += v * w;
    }
    Some(match 11 - (s % 11) {
        10 => 'X',
        11 => '0',
        d => char::from(b'0' + d as u8),
    })
}

/// GB 32100 check character (position 18) for the first 17 characters.
pub fn uscc_check(first17: &[u8]) -> Option<char> {
    let mut s = 0u32;
    for (&c, w) in first17.iter().zip(USCC_WEIGHTS) {
        s += uscc_index(c)? * w;
    }
    Some(USCC_ALPHABET[((31 - s % 31) % 31) as usize] as char)
}

fn category_allowed(authority: u8, category: u8) -> bool {
    // GB 32100 table 1; "9 other" is allowed for every authority that defines categories.
    let allowed: &[u8] = match authority {
        b'1' => b"1239",
        b'2' => b"19",
        b'3' => b"1234569",
        b'4' => b"19",
        b'5' => b"1239",
        b'6' => b"19",
        b'7' => b"129",
        b'8' => b"19",
        b'9' => b"123",
        b'A' => b"19",
        b'N' => b"1239",
        b'Y' => b"1",
        _ => return false,
    };
    allowed.contains(&category)
}

/// Validate a unified social credit code against GB 32100 (and GB 11714 inside it).
pub fn validate_uscc(code: &str) -> Result<(), IdError> {
    let b = code.as_bytes();
    if b.len() != 18 {
        return Err(IdError::Length {
            actual: code.chars().count(),
            expected: "18",
        });
    }
    if let Some(p) = b.iter().position(|&c| uscc_index(c).is_none()) {
        return Err(IdError::Character {
            position: p + 1,
            allowed: "0-9 and upper-case letters except I, O, Z, S, V",
        });
    }
    if !category_allowed(b[0], b[1]) {
        return Err(IdError::Category {
            authority: b[0] as char,
            category: b[1] as char,
        });
    }
    if let Some(p) = b[2..8].iter().position(|c| !c.is_ascii_digit()) {
        return Err(IdError::Character {
            position: p + 3,
            allowed: "digits (region code)",
        });
    }
    // Nationwide registrations use 100000; otherwise the province prefix must exist.
    if &code[2..8] != "100000" {
        validate_region_code(&code[2..8])?;
    }
    let expected_org = org_code_check(&b[8..16]).ok_or(IdError::Character {
        position: 9,
        allowed: "0-9, A-Z",
    })?;
    if b[16] as char != expected_org {
        return Err(IdError::OrgCodeCheck {
            found: b[16] as char,
            expected: expected_org,
        });
    }
    let expected = uscc_check(&b[..17]).ok_or(IdError::Character {
        position: 1,
        allowed: "USCC alphabet",
    })?;
    if b[17] as char != expected {
        return Err(IdError::CheckCharacter {
            found: b[17] as char,
            expected,
        });
    }
    Ok(())
}

/// Check that a date is a real date no later than `today`.
pub fn validate_past_date(d: NaiveDate, today: NaiveDate) -> Result<(), IdError> {
    if d > today {
        return Err(IdError::FutureDate(d.format("%Y%m%d").to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 22).expect("date")
    }

    #[test]
    fn standard_annex_examples_are_valid() {
        for id in ["11010519491231002X", "440524188001010014"] {
            validate_citizen_id(id, today()).expect(id);
        }
        let c = validate_citizen_id("11010519491231002X", today()).expect("valid");
        assert_eq!(c.sex_code, "2");
        assert_eq!(
            c.birth_date,
            NaiveDate::from_ymd_opt(1949, 12, 31).expect("d")
        );
    }

    #[test]
    fn lowercase_x_is_normalised() {
        assert_eq!(
            validate_citizen_id("11010519491231002x", today())
                .expect("valid")
                .id,
            "11010519491231002X"
        );
    }

    #[test]
    fn legacy_15_digit_is_converted() {
        let c = validate_citizen_id("632123820927051", today()).expect("valid");
        assert_eq!(c.id, "632123198209270518");
        // 996-999 sequences are centenarians: born in the 1800s.
        let c = validate_citizen_id("110105991231997", today()).expect("valid");
        assert_eq!(&c.id[6..10], "1899");
    }

    #[test]
    fn each_citizen_id_rule_is_named() {
        let t = today();
        assert!(matches!(
            validate_citizen_id("1101051949123100", t),
            Err(IdError::Length { actual: 16, .. })
        ));
        assert!(matches!(
            validate_citizen_id("11010519491231A02X", t),
            Err(IdError::Character { position: 15, .. })
        ));
        assert!(matches!(
            validate_citizen_id("11010519491231002Y", t),
            Err(IdError::Character { position: 18, .. })
        ));
        assert!(matches!(
            validate_citizen_id("990105194912310021", t),
            Err(IdError::Region(_))
        ));
        // 1949-02-30 does not exist.
        let mut bad = b"11010519490230002".to_vec();
        bad.push(citizen_id_check(&bad) as u8);
        assert!(matches!(
            validate_citizen_id(std::str::from_utf8(&bad).expect("ascii"), t),
            Err(IdError::Date(_))
        ));
        let mut future = b"11010520301231002".to_vec();
        future.push(citizen_id_check(&future) as u8);
        assert!(matches!(
            validate_citizen_id(std::str::from_utf8(&future).expect("ascii"), t),
            Err(IdError::FutureDate(_))
        ));
        assert_eq!(
            validate_citizen_id("110105194912310021", t),
            Err(IdError::CheckCharacter {
                found: '1',
                expected: 'X'
            })
        );
        // Multi-byte input never panics and reports the length in characters.
        assert!(matches!(
            validate_citizen_id("张三", t),
            Err(IdError::Length { actual: 2, .. })
        ));
        assert!(validate_citizen_id("一二三四五六七八九十一二三四五", t).is_err());
    }

    /// The digit-by-digit date of an ID is the date chrono parses from the same digits, for
    /// every day of 1800-2100 and for the non-dates around them (month 00 or 13, day 00 or
    /// 32, 29 February of 1900 and 2100, not leap, and of 2000, leap).
    #[test]
    fn the_birth_date_of_an_id_is_read_as_chrono_parses_it() {
        let mut day = NaiveDate::from_ymd_opt(1800, 1, 1).expect("date");
        let mut ymds = Vec::new();
        while day.year() <= 2100 {
            ymds.push(day.format("%Y%m%d").to_string());
            day = day.succ_opt().expect("next day");
        }
        for y in ["1900", "2000", "2100", "1999"] {
            for md in ["0229", "0001", "1301", "0100", "0132", "0431", "9999"] {
                ymds.push(format!("{y}{md}"));
            }
        }
        for ymd in ymds {
            let id = format!("110105{ymd}0021");
            assert_eq!(
                citizen_id_birth_date(id.as_bytes()),
                NaiveDate::parse_from_str(&ymd, "%Y%m%d").ok(),
                "{ymd}"
            );
        }
        assert_eq!(citizen_id_birth_date(b"1101051949"), None);
        assert_eq!(citizen_id_birth_date(b"11010519A912310021"), None);
    }

    #[test]
    fn uscc_rules() {
        validate_uscc("91110000600037341L").expect("valid");
        assert!(matches!(
            validate_uscc("123456789012345678"),
            Err(IdError::OrgCodeCheck { .. })
        ));
        assert!(matches!(
            validate_uscc("91110000600037341"),
            Err(IdError::Length { .. })
        ));
        assert!(matches!(
            validate_uscc("9111000060003734IL"),
            Err(IdError::Character { position: 17, .. })
        ));
        assert!(matches!(
            validate_uscc("91110000600037341M"),
            Err(IdError::CheckCharacter { expected: 'L', .. })
        ));
        assert!(matches!(
            validate_uscc("97110000600037341L"),
            Err(IdError::Category { .. })
        ));
        assert!(matches!(
            validate_uscc("91990000600037341L"),
            Err(IdError::Region(_))
        ));
    }

    #[test]
    fn region_code_format() {
        validate_region_code("430623").expect("valid");
        assert!(validate_region_code("43062").is_err());
        assert!(validate_region_code("4306a3").is_err());
        assert!(validate_region_code("000000").is_err());
    }
}
