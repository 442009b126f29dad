//! A real subset of GB/T 2260: county-level codes with their province and prefecture names,
//! embedded from `data/gb2260.tsv`. Used by the synthetic generator (realistic codes and
//! addresses) and by the address mask (keep down to the county).

use std::sync::OnceLock;

use crate::error::{Error, Result};

/// One county-level division.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    /// Six-digit code.
    pub code: &'static str,
    /// Province name (省).
    pub province: &'static str,
    /// Prefecture name (市); `市辖区`/`县` for municipalities' placeholder level.
    pub prefecture: &'static str,
    /// County name (县/区).
    pub county: &'static str,
}

impl Region {
    /// The address prefix down to the county, as it is written in addresses.
    pub fn address_prefix(&self) -> String {
        let pref = if matches!(self.prefecture, "市辖区" | "县") {
            ""
        } else {
            self.prefecture
        };
        format!("{}{}{}", self.province, pref, self.county)
    }
}

const TABLE: &str = include_str!("../data/gb2260.tsv");

/// Every county in the embedded table, in code order.
pub fn all() -> &'static [Region] {
    static REGIONS: OnceLock<Vec<Region>> = OnceLock::new();
    REGIONS.get_or_init(|| {
        TABLE
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| {
                let mut it = l.split('\t');
                Some(Region {
                    code: it.next()?,
                    province: it.next()?,
                    prefecture: it.next()?,
                    county: it.next()?,
                })
            })
            .collect()
    })
}

/// The county with this code.
pub fn lookup(code: &str) -> Option<&'static Region> {
    let all = all();
    all.binary_search_by(|r| r.code.cmp(code))
        .ok()
        .map(|i| &all[i])
}

/// Normalise a region scope code to the prefix its bitmap is stored under:
/// `430000` → `43`, `430600` → `4306`, `430623` → `430623`; 2- and 4-digit prefixes pass through.
pub fn region_prefix(code: &str) -> Result<&str> {
    let ok = code.bytes().all(|b| b.is_ascii_digit());
    match code.len() {
        2 | 4 if ok => Ok(code),
        6 if ok => Ok(if &code[2..] == "0000" {
            &code[..2]
        } else if &code[4..] == "00" {
            &code[..4]
        } else {
            code
        }),
        _ => Err(Error::invalid(format!(
            "region scope '{code}' must be a GB/T 2260 code (6 digits) or a 2/4-digit prefix"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_valid_and_has_known_counties() {
        let all = all();
        assert!(all.len() > 3000);
        assert!(all.windows(2).all(|w| w[0].code < w[1].code));
        for r in all {
            crate::ident::validate_region_code(r.code).expect(r.code);
        }
        assert_eq!(lookup("430623").map(|r| r.county), Some("华容县"));
        assert_eq!(
            lookup("451425").map(|r| r.address_prefix()).as_deref(),
            Some("广西壮族自治区崇左市天等县")
        );
        assert_eq!(
            lookup("110105").map(|r| r.address_prefix()).as_deref(),
            Some("北京市朝阳区")
        );
    }

    #[test]
    fn region_prefixes() {
        assert_eq!(region_prefix("430000").expect("p"), "43");
        assert_eq!(region_prefix("430600").expect("c"), "4306");
        assert_eq!(region_prefix("430623").expect("x"), "430623");
        assert!(region_prefix("43062").is_err());
    }
}
