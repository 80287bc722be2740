//! Whole numbers as JSON Schema counts them: `2` and `2.0` are the same
//! integer. serde reads only the first into an integer field, so a client
//! built from the OpenAPI document (which says `integer`) could send a
//! value the daemon refused. Fields that take counts accept both.

use serde::{Deserialize, Deserializer, de::Error};

/// A JSON number with no fractional part, as a `u64`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Number {
    Int(u64),
    Float(f64),
}

fn whole<'de, D: Deserializer<'de>>(n: Number) -> Result<u64, D::Error> {
    match n {
        Number::Int(i) => Ok(i),
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "checked just before: whole, non-negative, within u64"
        )]
        Number::Float(f) if f.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(&f) => {
            Ok(f as u64)
        }
        Number::Float(f) => Err(D::Error::custom(format!(
            "invalid value: {f}, expected a whole number"
        ))),
    }
}

/// An optional `u32` that may be written `4` or `4.0`.
pub fn opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    Option::<Number>::deserialize(d)?
        .map(|n| {
            let v = whole::<D>(n)?;
            u32::try_from(v)
                .map_err(|_| D::Error::custom(format!("invalid value: {v}, expected a u32")))
        })
        .transpose()
}

/// An optional `u64` that may be written `4` or `4.0`.
pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Option::<Number>::deserialize(d)?
        .map(whole::<D>)
        .transpose()
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Counts {
        #[serde(default, deserialize_with = "super::opt_u32")]
        n: Option<u32>,
        #[serde(default, deserialize_with = "super::opt_u64")]
        big: Option<u64>,
    }

    #[test]
    fn integral_floats_are_integers_and_fractions_are_not() {
        let c: Counts = serde_json::from_str(r#"{"n": 4.0, "big": 17592186044416.0}"#).unwrap();
        assert_eq!((c.n, c.big), (Some(4), Some(17_592_186_044_416)));
        let c: Counts = serde_json::from_str(r#"{"n": 4, "big": null}"#).unwrap();
        assert_eq!((c.n, c.big), (Some(4), None));
        let c: Counts = serde_json::from_str("{}").unwrap();
        assert_eq!((c.n, c.big), (None, None));
        for bad in [
            r#"{"n": 4.5}"#,
            r#"{"n": -1}"#,
            r#"{"n": 4294967296}"#,
            r#"{"n": "4"}"#,
        ] {
            assert!(serde_json::from_str::<Counts>(bad).is_err(), "{bad}");
        }
    }
}
