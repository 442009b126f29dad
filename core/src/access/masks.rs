//! Masks: how a field a grant covers "masked" is shown. Applied inside the secured scan, so
//! everything above it — predicates, joins, grouping, functions, results — sees only masked
//! values (view semantics).
//!
//! ```
//! use govshare_core::access::masks::{mask_str, output_type};
//! use govshare_core::catalog::MaskKind;
//! assert_eq!(mask_str(MaskKind::CitizenId, "11010519491231002X"), "110105********002X");
//! assert_eq!(mask_str(MaskKind::Name, "张三丰"), "张**");
//! assert_eq!(mask_str(MaskKind::Phone, "13812345678"), "138****5678");
//! assert_eq!(mask_str(MaskKind::Address, "湖南省岳阳市华容县章华镇人民路1号"), "湖南省岳阳市华容县");
//! ```

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use arrow::array::{Array, ArrayRef, AsArray, Int32Array, StringArray, new_null_array};
use arrow::datatypes::{DataType, Date32Type};
use chrono::Datelike;

use crate::catalog::MaskKind;
use crate::error::{Error, Result};

/// The Arrow type a field has after masking (`date_to_year` yields the year as Int32).
pub fn output_type(mask: MaskKind, input: &DataType) -> DataType {
    match mask {
        MaskKind::DateToYear => DataType::Int32,
        MaskKind::Clear | MaskKind::Nullify => input.clone(),
        _ => DataType::Utf8,
    }
}

/// Whether `mask` can be applied to a field of type `input`.
pub fn applicable(mask: MaskKind, input: &DataType) -> bool {
    match mask {
        MaskKind::Clear | MaskKind::Nullify => true,
        MaskKind::DateToYear => input == &DataType::Date32,
        _ => input == &DataType::Utf8,
    }
}

/// How much a mask hides, for "at least the catalog default" checks: clear (0) < the
/// field-specific partial masks (1: citizen ID, name, phone, address, date to year — each
/// only comparable with itself) < pseudonym (2: nothing readable, still joinable within the
/// department) < nullify (3: nothing at all).
pub fn strength(mask: MaskKind) -> u8 {
    match mask {
        MaskKind::Clear => 0,
        MaskKind::CitizenId
        | MaskKind::Name
        | MaskKind::Phone
        | MaskKind::Address
        | MaskKind::DateToYear => 1,
        MaskKind::Pseudonym => 2,
        MaskKind::Nullify => 3,
    }
}

/// Whether showing a field through `mask` hides at least what `floor` hides: the same mask, or
/// a strictly stronger one. Two different partial masks are not comparable, so neither is at
/// least the other.
pub fn at_least(mask: MaskKind, floor: MaskKind) -> bool {
    mask == floor || strength(mask) > strength(floor)
}

/// A way to undo a mask from other fields of the same dataset: what `mask` hides, and the
/// fields that give it back when they are readable in clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Linkage {
    /// The mask.
    pub mask: MaskKind,
    /// What it hides, in words.
    pub hides: &'static str,
    /// Fields that reveal what it hides when granted in clear.
    pub derived_by: &'static [&'static str],
}

/// Every known linkage. The citizen ID mask keeps the first 6 and last 4 characters and hides
/// digits 7-14, which are the birth date: with `birth_date` in clear only the 3-digit sequence
/// number is unknown, and the visible check digit narrows it to about 90 candidates.
pub const LINKAGES: &[Linkage] = &[Linkage {
    mask: MaskKind::CitizenId,
    hides: "the birth date (characters 7-14)",
    derived_by: &["birth_date"],
}];

fn stars(n: usize) -> String {
    "*".repeat(n)
}

fn county_prefixes() -> &'static HashSet<String> {
    static SET: OnceLock<HashSet<String>> = OnceLock::new();
    SET.get_or_init(|| {
        crate::regions::all()
            .iter()
            .map(|r| r.address_prefix())
            .collect()
    })
}

/// Mask one text value (not for `date_to_year`, `nullify` or `pseudonym`).
pub fn mask_str(mask: MaskKind, v: &str) -> String {
    let chars: Vec<char> = v.chars().collect();
    let n = chars.len();
    match mask {
        MaskKind::CitizenId => {
            if n <= 10 {
                stars(n)
            } else {
                format!(
                    "{}{}{}",
                    chars[..6].iter().collect::<String>(),
                    stars(n - 10),
                    chars[n - 4..].iter().collect::<String>()
                )
            }
        }
        MaskKind::Name => match chars.first() {
            Some(c) if n > 1 => format!("{c}{}", stars(n - 1)),
            _ => stars(n.max(1)),
        },
        MaskKind::Phone => {
            if n >= 11 {
                format!(
                    "{}{}{}",
                    chars[..3].iter().collect::<String>(),
                    stars(n - 7),
                    chars[n - 4..].iter().collect::<String>()
                )
            } else if n > 4 {
                format!(
                    "{}{}",
                    stars(n - 4),
                    chars[n - 4..].iter().collect::<String>()
                )
            } else {
                stars(n)
            }
        }
        MaskKind::Address => {
            // Keep the longest prefix that is a known province+city+county; an address the
            // table does not recognise is hidden entirely rather than guessed at.
            let set = county_prefixes();
            let mut best = None;
            for (i, c) in v.char_indices() {
                if matches!(c, '县' | '区' | '市' | '旗') {
                    let cut = i + c.len_utf8();
                    if set.contains(&v[..cut]) {
                        best = Some(cut);
                    }
                }
                if i > 240 {
                    break;
                }
            }
            match best {
                Some(cut) => v[..cut].to_string(),
                None => "***".to_string(),
            }
        }
        _ => stars(n),
    }
}

/// Apply `mask` to a column. `pseudonym_key` is the consumer department's key.
pub fn apply(mask: MaskKind, col: &ArrayRef, pseudonym_key: &[u8; 32]) -> Result<ArrayRef> {
    if !applicable(mask, col.data_type()) {
        return Err(Error::Corrupt(format!(
            "mask {mask:?} cannot apply to {}",
            col.data_type()
        )));
    }
    Ok(match mask {
        MaskKind::Clear => col.clone(),
        MaskKind::Nullify => new_null_array(col.data_type(), col.len()),
        MaskKind::DateToYear => {
            let d = col.as_primitive::<Date32Type>();
            Arc::new(
                (0..d.len())
                    .map(|i| {
                        if d.is_valid(i) {
                            d.value_as_date(i).map(|x| x.year())
                        } else {
                            None
                        }
                    })
                    .collect::<Int32Array>(),
            )
        }
        MaskKind::Pseudonym => {
            let s = col.as_string::<i32>();
            Arc::new(
                (0..s.len())
                    .map(|i| {
                        s.is_valid(i).then(|| {
                            let h = blake3::keyed_hash(pseudonym_key, s.value(i).as_bytes());
                            h.to_hex()[..24].to_string()
                        })
                    })
                    .collect::<StringArray>(),
            )
        }
        m => {
            let s = col.as_string::<i32>();
            Arc::new(
                (0..s.len())
                    .map(|i| s.is_valid(i).then(|| mask_str(m, s.value(i))))
                    .collect::<StringArray>(),
            )
        }
    })
}

/// The pseudonym key of a consumer department: derived from the store's secret, distinct per
/// department, so pseudonyms of two departments cannot be joined.
pub fn department_key(store_secret: &[u8; 32], department: &str) -> [u8; 32] {
    let mut material = Vec::with_capacity(32 + department.len());
    material.extend_from_slice(store_secret);
    material.extend_from_slice(department.as_bytes());
    blake3::derive_key(
        "govshare 2026 pseudonym key per consumer department",
        &material,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_masks() {
        assert_eq!(
            mask_str(MaskKind::CitizenId, "110105194912310021"),
            "110105********0021"
        );
        assert_eq!(mask_str(MaskKind::Name, "李"), "*");
        assert_eq!(mask_str(MaskKind::Phone, "0731-1234"), "*****1234");
        assert_eq!(
            mask_str(MaskKind::Address, "北京市朝阳区建国路1号"),
            "北京市朝阳区"
        );
        assert_eq!(mask_str(MaskKind::Address, "某地某路1号"), "***");
        // Long names (autonomous regions and prefectures) are kept whole down to the county.
        assert_eq!(
            mask_str(
                MaskKind::Address,
                "新疆维吾尔自治区克孜勒苏柯尔克孜自治州阿图什市人民路5号"
            ),
            "新疆维吾尔自治区克孜勒苏柯尔克孜自治州阿图什市"
        );
    }

    #[test]
    fn pseudonyms_differ_per_department_and_are_stable() {
        let secret = [7u8; 32];
        let (a, b) = (department_key(&secret, "D1"), department_key(&secret, "D2"));
        let col: ArrayRef = Arc::new(StringArray::from(vec![Some("11010519491231002X"), None]));
        let pa = apply(MaskKind::Pseudonym, &col, &a).expect("mask");
        let pa2 = apply(MaskKind::Pseudonym, &col, &a).expect("mask");
        let pb = apply(MaskKind::Pseudonym, &col, &b).expect("mask");
        assert_eq!(&pa, &pa2);
        assert_ne!(
            pa.as_string::<i32>().value(0),
            pb.as_string::<i32>().value(0)
        );
        assert!(pa.is_null(1));
        assert!(apply(MaskKind::DateToYear, &col, &a).is_err());
    }
}
