//! The checked values of the file: durations, positive numbers, rates,
//! fractions, steps, each refused with a message naming the rule.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Parses `250ms`, `1.5s`, `2m`, `100us`, `0`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("{s:?}: a duration needs a unit (ns, us, ms, s, m, h)"))?;
    let (number, unit) = s.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{s:?}: {number:?} is not a number"))?;
    let scale = match unit {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?} (ns, us, ms, s, m, h)"
            ))
        }
    };
    Duration::try_from_secs_f64(n * scale).map_err(|e| format!("{s:?}: {e}"))
}

pub(super) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

pub(super) fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{}ms", d.as_secs_f64() * 1e3))
}

pub(super) fn positive_usize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = i64::deserialize(d)?;
    usize::try_from(n)
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| serde::de::Error::custom(format!("must be at least 1, got {n}")))
}

pub(super) fn positive_u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = i64::deserialize(d)?;
    u32::try_from(n)
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| serde::de::Error::custom(format!("must be 1 to {}, got {n}", u32::MAX)))
}

pub(super) fn positive_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = i64::deserialize(d)?;
    u64::try_from(n)
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| serde::de::Error::custom(format!("must be at least 1, got {n}")))
}

pub(super) fn number<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Number {
        Int(i64),
        Float(f64),
    }
    Ok(match Number::deserialize(d)? {
        Number::Int(i) => i as f64,
        Number::Float(f) => f,
    })
}

pub(super) fn positive_f64<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let x = number(d)?;
    if x.is_finite() && x > 0.0 {
        Ok(x)
    } else {
        Err(serde::de::Error::custom(format!(
            "must be above 0, got {x}"
        )))
    }
}

pub(super) fn weight<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let x = number(d)?;
    if x.is_finite() && x >= 0.0 {
        Ok(x)
    } else {
        Err(serde::de::Error::custom(format!(
            "a weight is 0 or more, got {x}"
        )))
    }
}

pub(super) fn fraction<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let x = number(d)?;
    if x.is_finite() && x > 0.0 && x <= 1.0 {
        Ok(x)
    } else {
        Err(serde::de::Error::custom(format!(
            "a fraction in (0, 1], got {x}"
        )))
    }
}

pub(super) fn steps<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    let steps = Vec::<f64>::deserialize(d)?;
    let ascending = steps.windows(2).all(|w| w[0] < w[1]);
    if !ascending || steps.iter().any(|&s| !(s > 0.0 && s <= 100.0)) {
        return Err(serde::de::Error::custom(format!(
            "steps are ascending percentages in (0, 100], got {steps:?}"
        )));
    }
    Ok(steps)
}

pub(super) fn positive_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let x = duration(d)?;
    if x.is_zero() {
        return Err(serde::de::Error::custom("must be above 0"));
    }
    Ok(x)
}

pub(super) fn some_positive_duration<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    positive_duration(d).map(Some)
}

pub(super) fn some_positive_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    positive_f64(d).map(Some)
}

pub(super) fn in_range<'de, D: Deserializer<'de>>(d: D, lo: f64, hi: f64) -> Result<f64, D::Error> {
    let x = number(d)?;
    if x.is_finite() && (lo..=hi).contains(&x) {
        Ok(x)
    } else {
        Err(serde::de::Error::custom(format!(
            "must be in [{lo}, {hi}], got {x}"
        )))
    }
}

pub(super) fn rate<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    in_range(d, 0.0, 1.0)
}

pub(super) fn some_rate<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    in_range(d, 0.0, 1.0).map(Some)
}

pub(super) fn some_cosine<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    in_range(d, -1.0, 1.0).map(Some)
}

pub(super) fn some_non_negative<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    in_range(d, 0.0, f64::MAX).map(Some)
}
