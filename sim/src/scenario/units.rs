//! Values with units as scenario files write them: `250ms`, `10Gbit`, `2%`, `10MB`,
//! `30000-32767`.
//!
//! Numbers with units are parsed exactly (integer arithmetic, no float rounding) into the
//! base unit the simulator counts in: nanoseconds, bits per second, bytes. A bare number
//! means the base unit where that is unambiguous (sizes, bandwidth); a duration or a
//! percentage must carry its unit, except `0`, so `timeout: 5` is an error rather than five
//! nanoseconds nobody meant.
//!
//! The `parse_*` functions are public so the CLI parses `--until 5s` the same way.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::model::{CompareOp, PortRange};

/// Parses a duration such as `250ms`, `1.5s`, `50us`, `1m`, `1h` into nanoseconds.
///
/// Units: `ns`, `us` (or `µs`), `ms`, `s`, `m` (or `min`), `h`. A fraction is allowed when
/// the result is a whole number of nanoseconds. `0` needs no unit.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "invalid duration {text:?}: expected a number and a unit \
             (ns, us, ms, s, m, h), e.g. 250ms"
        )
    };
    let (number, unit) = split_number(text).ok_or_else(bad)?;
    let scale: u64 = match unit {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" | "min" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "" if is_zero(number) => 1,
        _ => return Err(bad()),
    };
    scale_exact(number, scale, "nanoseconds")
        .map_err(|why| format!("invalid duration {text:?}: {why}"))
}

/// Parses a bandwidth such as `10Gbit`, `100Mbit`, `1kbit`, `2.5Gbps` into bits per second.
///
/// Units are decimal (k = 1000): `bit`, `kbit`, `Mbit`, `Gbit`, `Tbit`, or the same with
/// `bps`; `/s` may follow. A bare number is bits per second. Must be more than 0.
pub fn parse_bandwidth(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "invalid bandwidth {text:?}: expected a number and a unit \
             (bit, kbit, Mbit, Gbit, Tbit), e.g. 10Gbit"
        )
    };
    let (number, unit) = split_number(text).ok_or_else(bad)?;
    let unit = unit.strip_suffix("/s").unwrap_or(unit);
    // Only a lowercase `bit`/`bps` is accepted: `MB` would be megabytes, a different thing.
    let prefix = unit
        .strip_suffix("bit")
        .or_else(|| unit.strip_suffix("bps"))
        .unwrap_or(unit);
    if prefix.len() == unit.len() && !unit.is_empty() {
        return Err(bad());
    }
    let scale: u64 = match prefix {
        "" => 1,
        "k" | "K" => 1_000,
        "m" | "M" => 1_000_000,
        "g" | "G" => 1_000_000_000,
        "t" | "T" => 1_000_000_000_000,
        _ => return Err(bad()),
    };
    let bits = scale_exact(number, scale, "bits per second")
        .map_err(|why| format!("invalid bandwidth {text:?}: {why}"))?;
    if bits == 0 {
        return Err(format!(
            "invalid bandwidth {text:?}: must be more than 0 (use a link_down fault to cut a link)"
        ));
    }
    Ok(bits)
}

/// Parses a size in bytes: a plain integer, or with `B`, `KB`, `MB`, `GB` (powers of 1000)
/// or `KiB`, `MiB`, `GiB` (powers of 1024), e.g. `10MB`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "invalid size {text:?}: expected a number of bytes, optionally with \
             B, KB, MB, GB, KiB, MiB or GiB, e.g. 1500 or 10MB"
        )
    };
    let (number, unit) = split_number(text).ok_or_else(bad)?;
    let scale: u64 = match unit {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Err(bad()),
    };
    scale_exact(number, scale, "bytes").map_err(|why| format!("invalid size {text:?}: {why}"))
}

/// Parses a percentage such as `2%` or `0.5%` into a fraction between 0 and 1.
/// `0` needs no `%`.
pub fn parse_percent(text: &str) -> Result<f64, String> {
    let bad = || format!("invalid percentage {text:?}: expected e.g. 2% or 0.5%");
    let (number, unit) = split_number(text).ok_or_else(bad)?;
    match unit {
        "%" => {}
        "" if is_zero(number) => {}
        _ => return Err(bad()),
    }
    let percent: f64 = number.parse().map_err(|_| bad())?;
    if percent > 100.0 {
        return Err(format!(
            "invalid percentage {text:?}: must be between 0% and 100%"
        ));
    }
    Ok(percent / 100.0)
}

/// Parses an expectation's share of delivered requests: `100%`, `>= 95%`, `<= 5%`, `> 0%`.
/// Without an operator the share must be equal. Returns the operator and the fraction.
pub fn parse_comparison(text: &str) -> Result<(CompareOp, f64), String> {
    let trimmed = text.trim();
    let (op, rest) = [
        (">=", CompareOp::AtLeast),
        ("<=", CompareOp::AtMost),
        ("==", CompareOp::Equal),
        (">", CompareOp::MoreThan),
        ("<", CompareOp::LessThan),
        ("=", CompareOp::Equal),
    ]
    .into_iter()
    .find_map(|(symbol, op)| trimmed.strip_prefix(symbol).map(|rest| (op, rest)))
    .unwrap_or((CompareOp::Equal, trimmed));
    let share = parse_percent(rest).map_err(|_| {
        format!("invalid share {text:?}: expected e.g. 100%, \">= 95%\", \"<= 5%\" or 0%")
    })?;
    Ok((op, share))
}

/// Parses a port number, 1 to 65535.
pub fn parse_port(text: &str) -> Result<u16, String> {
    let digits = text.trim();
    match digits.parse::<u16>() {
        Ok(port) if port > 0 && digits.bytes().all(|b| b.is_ascii_digit()) => Ok(port),
        _ => Err(format!("invalid port {text:?}: ports are 1 to 65535")),
    }
}

/// Parses a port (`8472`) or an inclusive range (`30000-32767`); ports are 1 to 65535.
pub fn parse_port_range(text: &str) -> Result<PortRange, String> {
    let (first, last) = match text.split_once('-') {
        Some((first, last)) => {
            let port = |part: &str| {
                parse_port(part).map_err(|_| {
                    format!(
                        "invalid port range {text:?}: expected two ports (1 to 65535), \
                         e.g. 30000-32767"
                    )
                })
            };
            (port(first)?, port(last)?)
        }
        None => {
            let only = parse_port(text)?;
            (only, only)
        }
    };
    if first > last {
        return Err(format!(
            "invalid port range {text:?}: the first port is above the last"
        ));
    }
    Ok(PortRange { first, last })
}

/// Writes nanoseconds in the largest unit that keeps them whole: `9s`, `250ms`, `1500ns`.
pub fn format_duration(ns: u64) -> String {
    const UNITS: [(u64, &str); 6] = [
        (3_600_000_000_000, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
        (1_000, "us"),
        (1, "ns"),
    ];
    if ns == 0 {
        return "0s".to_string();
    }
    let (scale, unit) = UNITS
        .into_iter()
        .find(|(scale, _)| ns.is_multiple_of(*scale))
        .unwrap_or((1, "ns"));
    format!("{}{unit}", ns / scale)
}

/// Splits `"250ms"` into `("250", "ms")`. The number is decimal digits with at most one
/// inner `.`; the unit is the rest, with spaces between the two allowed.
fn split_number(text: &str) -> Option<(&str, &str)> {
    let text = text.trim();
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(end);
    let well_formed = !number.is_empty()
        && !number.starts_with('.')
        && !number.ends_with('.')
        && number.matches('.').count() <= 1;
    well_formed.then(|| (number, unit.trim_start()))
}

fn is_zero(number: &str) -> bool {
    number.chars().all(|c| c == '0' || c == '.')
}

/// `number × scale` computed exactly; an error if it is not a whole number of `base_unit`
/// or does not fit in u64.
fn scale_exact(number: &str, scale: u64, base_unit: &str) -> Result<u64, String> {
    let too_large = || "too large".to_string();
    let not_whole = || format!("not a whole number of {base_unit}");
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let whole: u128 = whole.parse().map_err(|_| too_large())?;
    let mut value = whole.checked_mul(u128::from(scale)).ok_or_else(too_large)?;
    let fraction = fraction.trim_end_matches('0');
    if !fraction.is_empty() {
        // More decimals than the scale has digits can never give a whole number.
        let denominator = u32::try_from(fraction.len())
            .ok()
            .and_then(|digits| 10u128.checked_pow(digits))
            .filter(|denominator| *denominator <= u128::from(scale))
            .ok_or_else(not_whole)?;
        let numerator: u128 = fraction.parse().map_err(|_| not_whole())?;
        let part = numerator * u128::from(scale);
        if !part.is_multiple_of(denominator) {
            return Err(not_whole());
        }
        value = value
            .checked_add(part / denominator)
            .ok_or_else(too_large)?;
    }
    u64::try_from(value).map_err(|_| too_large())
}

/// Deserializes a scalar written either as text (`250ms`) or as a YAML number (`1500`)
/// through one of the parsers above, so both forms give the same value and message.
fn deserialize_unit<'de, D, T>(
    deserializer: D,
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct UnitVisitor<T> {
        expecting: &'static str,
        parse: fn(&str) -> Result<T, String>,
    }

    impl<T> Visitor<'_> for UnitVisitor<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
            (self.parse)(text).map_err(E::custom)
        }

        fn visit_u64<E: de::Error>(self, number: u64) -> Result<T, E> {
            self.visit_str(&number.to_string())
        }

        fn visit_i64<E: de::Error>(self, number: i64) -> Result<T, E> {
            self.visit_str(&number.to_string())
        }

        fn visit_f64<E: de::Error>(self, number: f64) -> Result<T, E> {
            self.visit_str(&number.to_string())
        }
    }

    deserializer.deserialize_any(UnitVisitor { expecting, parse })
}

/// A port number (1 to 65535), as written in a scenario file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Port(pub u16);

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_unit(deserializer, "a port, 1 to 65535", parse_port).map(Port)
    }
}

/// A duration in nanoseconds, as written in a scenario file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Nanos(pub u64);

impl<'de> Deserialize<'de> for Nanos {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_unit(deserializer, "a duration such as 250ms", parse_duration).map(Nanos)
    }
}

/// A bandwidth in bits per second, as written in a scenario file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BitsPerSecond(pub u64);

impl<'de> Deserialize<'de> for BitsPerSecond {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_unit(deserializer, "a bandwidth such as 10Gbit", parse_bandwidth)
            .map(BitsPerSecond)
    }
}

/// A size in bytes, as written in a scenario file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Bytes(pub u64);

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_unit(deserializer, "a size such as 1500 or 10MB", parse_size).map(Bytes)
    }
}

/// A percentage as a fraction between 0 and 1, as written in a scenario file.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Fraction(pub f64);

impl<'de> Deserialize<'de> for Fraction {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_unit(deserializer, "a percentage such as 2%", parse_percent).map(Fraction)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_unit(
            deserializer,
            "a port or a range such as 30000-32767",
            parse_port_range,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_nanoseconds() {
        assert_eq!(parse_duration("1ns"), Ok(1));
        assert_eq!(parse_duration("50us"), Ok(50_000));
        assert_eq!(parse_duration("250ms"), Ok(250_000_000));
        assert_eq!(parse_duration("10s"), Ok(10_000_000_000));
        assert_eq!(parse_duration("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_duration("1m"), Ok(60_000_000_000));
        assert_eq!(parse_duration("1h"), Ok(3_600_000_000_000));
        assert_eq!(parse_duration("10800s"), Ok(10_800_000_000_000));
        assert_eq!(parse_duration("0"), Ok(0));
        assert_eq!(parse_duration(" 2 ms "), Ok(2_000_000));
    }

    #[test]
    fn bad_durations_say_why() {
        for text in [
            "5",
            "10 sec",
            "ms",
            "1.5ns",
            "-1s",
            "1..2s",
            "",
            "99999999999h",
        ] {
            let error = parse_duration(text).unwrap_err();
            assert!(error.contains("invalid duration"), "{text}: {error}");
        }
        assert!(parse_duration("1.5ns")
            .unwrap_err()
            .contains("whole number"));
        assert!(parse_duration("99999999999h")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn durations_written_back() {
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(9_000_000_000), "9s");
        assert_eq!(format_duration(250_000_000), "250ms");
        assert_eq!(format_duration(1_500_000_000), "1500ms");
        assert_eq!(format_duration(60_000_000_000), "1m");
        assert_eq!(format_duration(1), "1ns");
        for ns in [1, 999, 1_500_000_000, 7_200_000_000_000] {
            assert_eq!(parse_duration(&format_duration(ns)), Ok(ns));
        }
    }

    #[test]
    fn bandwidth_in_bits_per_second() {
        assert_eq!(parse_bandwidth("10Gbit"), Ok(10_000_000_000));
        assert_eq!(parse_bandwidth("100Mbit"), Ok(100_000_000));
        assert_eq!(parse_bandwidth("1kbit"), Ok(1_000));
        assert_eq!(parse_bandwidth("2.5Gbps"), Ok(2_500_000_000));
        assert_eq!(parse_bandwidth("1Gbit/s"), Ok(1_000_000_000));
        assert_eq!(parse_bandwidth("9600"), Ok(9600));
        for text in ["10GB", "10G", "fast", "0Gbit", "10 Gbyte"] {
            assert!(parse_bandwidth(text).is_err(), "{text}");
        }
    }

    #[test]
    fn sizes_in_bytes() {
        assert_eq!(parse_size("1500"), Ok(1500));
        assert_eq!(parse_size("64B"), Ok(64));
        assert_eq!(parse_size("1KB"), Ok(1_000));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("1KiB"), Ok(1024));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        for text in ["1Mb", "ten", "1.5", "-3"] {
            assert!(parse_size(text).is_err(), "{text}");
        }
    }

    #[test]
    fn percentages_as_fractions() {
        assert_eq!(parse_percent("2%"), Ok(0.02));
        assert_eq!(parse_percent("0.5%"), Ok(0.005));
        assert_eq!(parse_percent("100%"), Ok(1.0));
        assert_eq!(parse_percent("0%"), Ok(0.0));
        assert_eq!(parse_percent("0"), Ok(0.0));
        for text in ["2", "101%", "x%", "%"] {
            assert!(parse_percent(text).is_err(), "{text}");
        }
    }

    #[test]
    fn comparisons() {
        assert_eq!(parse_comparison("100%"), Ok((CompareOp::Equal, 1.0)));
        assert_eq!(parse_comparison(">= 95%"), Ok((CompareOp::AtLeast, 0.95)));
        assert_eq!(parse_comparison("<=5%"), Ok((CompareOp::AtMost, 0.05)));
        assert_eq!(parse_comparison("> 0%"), Ok((CompareOp::MoreThan, 0.0)));
        assert_eq!(parse_comparison("< 1%"), Ok((CompareOp::LessThan, 0.01)));
        assert!(parse_comparison("most").is_err());
        assert!(parse_comparison("=> 5%").is_err());
    }

    #[test]
    fn ports_and_ranges() {
        let range = |first, last| Ok(PortRange { first, last });
        assert_eq!(parse_port_range("10250"), range(10250, 10250));
        assert_eq!(parse_port_range("30000-32767"), range(30000, 32767));
        assert_eq!(parse_port_range("2379 - 2380"), range(2379, 2380));
        for text in ["0", "65536", "5-4", "a-b", "1-", "-", "+80"] {
            assert!(parse_port_range(text).is_err(), "{text}");
        }
        assert_eq!(parse_port("8472"), Ok(8472));
        assert!(parse_port("0").unwrap_err().contains("1 to 65535"));
        assert!(parse_port("70000").is_err());
    }
}
