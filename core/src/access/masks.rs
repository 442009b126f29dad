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

use arrow::array::{Array, ArrayRef, AsArray, StringBuilder, new_null_array};
use arrow::compute::kernels::temporal::{DatePart, date_part};
use arrow::datatypes::DataType;

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
    let mut out = String::with_capacity(v.len());
    mask_into(mask, v, &mut out);
    out
}

/// Append `n` stars.
fn push_stars(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n('*', n));
}

/// The byte offset where the `k`-th character of `v` starts (`v.len()` past the end).
fn char_at(v: &str, k: usize) -> usize {
    if v.is_ascii() {
        k.min(v.len())
    } else {
        v.char_indices().nth(k).map_or(v.len(), |(i, _)| i)
    }
}

/// Mask one text value into `out` — what [`mask_str`] returns, without allocating per value
/// (a column is masked into one buffer).
fn mask_into(mask: MaskKind, v: &str, out: &mut String) {
    let n = if v.is_ascii() {
        v.len()
    } else {
        v.chars().count()
    };
    match mask {
        MaskKind::CitizenId => {
            if n <= 10 {
                push_stars(out, n)
            } else {
                out.push_str(&v[..char_at(v, 6)]);
                push_stars(out, n - 10);
                out.push_str(&v[char_at(v, n - 4)..]);
            }
        }
        MaskKind::Name => match v.chars().next() {
            Some(c) if n > 1 => {
                out.push(c);
                push_stars(out, n - 1);
            }
            _ => push_stars(out, n.max(1)),
        },
        MaskKind::Phone => {
            if n >= 11 {
                out.push_str(&v[..char_at(v, 3)]);
                push_stars(out, n - 7);
                out.push_str(&v[char_at(v, n - 4)..]);
            } else if n > 4 {
                push_stars(out, n - 4);
                out.push_str(&v[char_at(v, n - 4)..]);
            } else {
                push_stars(out, n)
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
                Some(cut) => out.push_str(&v[..cut]),
                None => out.push_str("***"),
            }
        }
        _ => push_stars(out, n),
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
        MaskKind::DateToYear => date_part(col.as_ref(), DatePart::Year)?,
        MaskKind::Pseudonym => {
            let s = col.as_string::<i32>();
            let mut b = StringBuilder::with_capacity(s.len(), s.len() * 24);
            for i in 0..s.len() {
                if s.is_valid(i) {
                    let h = blake3::keyed_hash(pseudonym_key, s.value(i).as_bytes());
                    b.append_value(&h.to_hex()[..24]);
                } else {
                    b.append_null();
                }
            }
            Arc::new(b.finish())
        }
        m => {
            let s = col.as_string::<i32>();
            let mut b = StringBuilder::with_capacity(s.len(), s.value_data().len());
            let mut buf = String::new();
            for i in 0..s.len() {
                if s.is_valid(i) {
                    buf.clear();
                    mask_into(m, s.value(i), &mut buf);
                    b.append_value(&buf);
                } else {
                    b.append_null();
                }
            }
            Arc::new(b.finish())
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
    use arrow::array::{Date32Array, StringArray};

    /// The masks by character arithmetic, as first written: the buffer-writing version must
    /// give exactly these values, ASCII or not.
    fn by_chars(mask: MaskKind, v: &str) -> String {
        let c: Vec<char> = v.chars().collect();
        let n = c.len();
        let s = |a: &[char]| a.iter().collect::<String>();
        let st = |k: usize| "*".repeat(k);
        match mask {
            MaskKind::CitizenId if n > 10 => {
                format!("{}{}{}", s(&c[..6]), st(n - 10), s(&c[n - 4..]))
            }
            MaskKind::Name if n > 1 => format!("{}{}", c[0], st(n - 1)),
            MaskKind::Name => st(n.max(1)),
            MaskKind::Phone if n >= 11 => format!("{}{}{}", s(&c[..3]), st(n - 7), s(&c[n - 4..])),
            MaskKind::Phone if n > 4 => format!("{}{}", st(n - 4), s(&c[n - 4..])),
            _ => st(n),
        }
    }

    #[test]
    fn masks_write_the_same_values_as_character_arithmetic() {
        let values = [
            "",
            "a",
            "张",
            "张三",
            "欧阳娜娜",
            "11010519491231002X",
            "1101051949123100２X",
            "13812345678",
            "138１２３45678",
            "0731-1234",
            "1234",
            "12345",
            "李四的电话号码很长很长",
        ];
        for m in [MaskKind::CitizenId, MaskKind::Name, MaskKind::Phone] {
            for v in values {
                assert_eq!(mask_str(m, v), by_chars(m, v), "{m:?} of {v:?}");
            }
        }
        let col: ArrayRef = Arc::new(StringArray::from(vec![Some("张三丰"), None, Some("")]));
        let masked = apply(MaskKind::Name, &col, &[0; 32]).expect("mask");
        let masked = masked.as_string::<i32>();
        assert_eq!(masked.value(0), "张**");
        assert!(masked.is_null(1));
        assert_eq!(masked.value(2), "*");
        let dates: ArrayRef = Arc::new(Date32Array::from(vec![Some(0), None, Some(-1)]));
        let years = apply(MaskKind::DateToYear, &dates, &[0; 32]).expect("year");
        let years = years.as_primitive::<arrow::datatypes::Int32Type>();
        assert_eq!(
            (years.value(0), years.is_null(1), years.value(2)),
            (1970, true, 1969)
        );
    }

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
