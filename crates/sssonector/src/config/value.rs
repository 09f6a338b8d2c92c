//! Typed configuration values read straight from their TOML text, so a bad one is reported by
//! the parser with its field path and line, and nothing is parsed twice.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A duration written `500ms`, `10s`, `5m`, `1h` or `7d`; never zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Dur(pub(crate) Duration);

impl Dur {
    pub(crate) const fn secs(n: u64) -> Self {
        Self(Duration::from_secs(n))
    }

    pub(crate) const fn millis(n: u64) -> Self {
        Self(Duration::from_millis(n))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        let ms = d.as_millis();
        let (n, unit) = match ms {
            ms if ms % 86_400_000 == 0 => (ms / 86_400_000, "d"),
            ms if ms % 3_600_000 == 0 => (ms / 3_600_000, "h"),
            ms if ms % 60_000 == 0 => (ms / 60_000, "m"),
            ms if ms % 1000 == 0 => (ms / 1000, "s"),
            ms => (ms, "ms"),
        };
        write!(f, "{n}{unit}")
    }
}

impl FromStr for Dur {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match super::parse_duration(text) {
            Some(d) if !d.is_zero() => Ok(Self(d)),
            Some(_) => Err(format!("{text:?} is zero; give a positive duration")),
            None => Err(format!(
                "{text:?} is not a duration (write 500ms, 10s, 5m, 1h or 7d)"
            )),
        }
    }
}

/// Reads any value whose text form parses with `FromStr`, the parse error as the message.
pub(crate) fn from_text<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(serde::de::Error::custom)
}

/// [`from_text`] for a list.
pub(crate) fn from_text_list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    Vec::<String>::deserialize(deserializer)?
        .into_iter()
        .enumerate()
        .map(|(i, text)| {
            text.parse()
                .map_err(|e| serde::de::Error::custom(format!("[{i}]: {e}")))
        })
        .collect()
}

/// A socket address, `IP:port`.
pub(crate) fn socket_addr<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<std::net::SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "{text:?} is not an IP address and port (for example 0.0.0.0:8443)"
        ))
    })
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        from_text(deserializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_and_print_the_same() {
        for text in ["500ms", "10s", "5m", "1h", "7d"] {
            assert_eq!(text.parse::<Dur>().unwrap().to_string(), text);
        }
        assert_eq!("90s".parse::<Dur>().unwrap().to_string(), "90s");
        assert!("0s".parse::<Dur>().unwrap_err().contains("zero"));
        assert!("10".parse::<Dur>().unwrap_err().contains("not a duration"));
    }
}
