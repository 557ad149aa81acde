//! Sizes and addresses as written in the TOML files: an integer (`0x4000_0000`) or a string
//! with a binary unit (`"64MiB"`, `"4KiB"`, `"1GiB"`).

use serde::de::{self, Deserializer, Visitor};
use std::fmt;

/// A byte count or address, from an integer or a size string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bytes(pub u64);

/// Parses `"64MiB"`-style sizes: a decimal or `0x` number, optional `_` separators, and an
/// optional unit `B`, `KiB`, `MiB`, `GiB` or `TiB`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = match text.strip_prefix("0x") {
        Some(_) => (text, ""),
        None => {
            let split = text.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(text.len());
            (text[..split].trim(), text[split..].trim())
        }
    };
    let shift = match unit {
        "" | "B" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        "TiB" => 40,
        _ => return Err(format!("unknown unit '{unit}' in size \"{text}\" (use B, KiB, MiB, GiB or TiB)")),
    };
    let digits = number.replace('_', "");
    let value = match digits.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => digits.parse(),
    }
    .map_err(|_| format!("\"{text}\" is not a size (write e.g. \"64MiB\" or 0x400_0000)"))?;
    value
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("size \"{text}\" does not fit in 64 bits"))
}

/// Why `value` is not a size or an address.
pub fn negative(value: i64) -> String {
    format!("{value} is negative: sizes and addresses are 0 or more")
}

/// `n MiB`-style text for messages: the largest unit that divides `bytes` exactly.
pub fn describe(bytes: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes != 0 && bytes.is_multiple_of(1 << shift) {
            return format!("{} {unit}", bytes >> shift);
        }
    }
    format!("{bytes} bytes")
}

impl<'de> de::Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BytesVisitor;

        impl Visitor<'_> for BytesVisitor {
            type Value = Bytes;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte count: an integer or a string like \"64MiB\"")
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Bytes, E> {
                u64::try_from(value).map(Bytes).map_err(|_| E::custom(negative(value)))
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Bytes, E> {
                Ok(Bytes(value))
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<Bytes, E> {
                parse_size(value).map(Bytes).map_err(E::custom)
            }
        }

        deserializer.deserialize_any(BytesVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_hex() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("4 KiB"), Ok(4096));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("0x4000_0000"), Ok(0x4000_0000));
        assert_eq!(parse_size("1_000"), Ok(1000));
        assert_eq!(parse_size("12B"), Ok(12));
    }

    #[test]
    fn rejects_bad_sizes() {
        assert_eq!(
            parse_size("64MB"),
            Err("unknown unit 'MB' in size \"64MB\" (use B, KiB, MiB, GiB or TiB)".to_string())
        );
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999TiB").unwrap_err().contains("does not fit"));
    }

    #[test]
    fn describes_sizes() {
        assert_eq!(describe(64 << 20), "64 MiB");
        assert_eq!(describe(3 << 10), "3 KiB");
        assert_eq!(describe(1000), "1000 bytes");
        assert_eq!(describe(0), "0 bytes");
    }
}
