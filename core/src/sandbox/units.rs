//! Sizes ("256M", 1048576) and durations ("10s", "500ms", 2.5) as they appear in specs, on the
//! command line and in the bindings.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A size in bytes. Parses plain integers and binary suffixes: `K`, `M`, `G`, `T` (also `KiB`,
/// `MB`…: all mean powers of 1024).
///
/// ```
/// use cagette::Size;
/// assert_eq!("256M".parse::<Size>().unwrap().bytes(), 256 << 20);
/// assert_eq!("1g".parse::<Size>().unwrap().bytes(), 1 << 30);
/// assert!("12 apples".parse::<Size>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Size(pub u64);

impl Size {
    /// The number of bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

/// A value that could not be parsed as a size or duration; says what was expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {input:?}: expected {expected}")]
pub struct ParseUnitError {
    kind: &'static str,
    input: String,
    expected: &'static str,
}

impl FromStr for Size {
    type Err = ParseUnitError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseUnitError {
            kind: "size",
            input: s.to_string(),
            expected: "a number of bytes with an optional K, M, G or T suffix, like 256M",
        };
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().map_err(|_| err())?;
        let shift = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 0,
            "k" | "kb" | "kib" => 10,
            "m" | "mb" | "mib" => 20,
            "g" | "gb" | "gib" => 30,
            "t" | "tb" | "tib" => 40,
            _ => return Err(err()),
        };
        n.checked_mul(1u64 << shift).map(Size).ok_or_else(err)
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<u64> for Size {
    fn from(v: u64) -> Self {
        Size(v)
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Size(n)),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// Parses a duration: a number of seconds (`"2.5"`), or a number with `ms`, `s`, `m` or `h`.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(cagette::parse_duration("10s").unwrap(), Duration::from_secs(10));
/// assert_eq!(cagette::parse_duration("250ms").unwrap(), Duration::from_millis(250));
/// assert_eq!(cagette::parse_duration("1.5").unwrap(), Duration::from_millis(1500));
/// ```
pub fn parse_duration(s: &str) -> Result<Duration, ParseUnitError> {
    let err = || ParseUnitError {
        kind: "duration",
        input: s.to_string(),
        expected: "seconds, or a number with ms, s, m or h, like 10s",
    };
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| err())?;
    let scale = match unit.trim() {
        "" | "s" | "sec" => 1.0,
        "ms" => 1e-3,
        "us" => 1e-6,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(err()),
    };
    Duration::try_from_secs_f64(n * scale).map_err(|_| err())
}

/// Serde helpers: durations as seconds (number) or strings such as "10s".
pub(crate) mod duration_opt {
    use super::parse_duration;
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_f64(d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(f64),
            S(String),
        }
        match Option::<Raw>::deserialize(d)? {
            None => Ok(None),
            Some(Raw::N(n)) => Duration::try_from_secs_f64(n)
                .map(Some)
                .map_err(|_| serde::de::Error::custom(format!("invalid duration {n}: must be a non-negative number of seconds"))),
            Some(Raw::S(s)) => parse_duration(&s).map(Some).map_err(serde::de::Error::custom),
        }
    }
}
