//! Parsing of quantities given on the [0,1] pixel scale: `0.0314` or `8/255`.

/// Why a quantity was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UnitsError {
    #[error("'{0}' is not a number or a fraction like 8/255")]
    NotANumber(String),
    #[error("'{0}': division by zero")]
    DivisionByZero(String),
    #[error("'{0}' is not finite")]
    NotFinite(String),
    #[error(
        "eps {text} = {value} is outside [0, 1]; eps is on the [0,1] pixel scale (8/255 ≈ 0.0314)"
    )]
    EpsOutOfRange { text: String, value: f64 },
}

/// Parses a decimal or a fraction `a/b`.
pub fn parse_fraction(s: &str) -> Result<f64, UnitsError> {
    let s = s.trim();
    let number = |t: &str| {
        t.trim()
            .parse::<f64>()
            .map_err(|_| UnitsError::NotANumber(s.to_string()))
    };
    let value = match s.split_once('/') {
        Some((a, b)) => {
            let (a, b) = (number(a)?, number(b)?);
            if b == 0.0 {
                return Err(UnitsError::DivisionByZero(s.to_string()));
            }
            a / b
        }
        None => number(s)?,
    };
    if !value.is_finite() {
        return Err(UnitsError::NotFinite(s.to_string()));
    }
    // `-0` is 0 (printed as 0, not -0).
    Ok(if value == 0.0 { 0.0 } else { value })
}

/// An ε on the [0,1] pixel scale: non-negative and at most 1.
pub fn parse_eps(s: &str) -> Result<f64, UnitsError> {
    let v = parse_fraction(s)?;
    if !(0.0..=1.0).contains(&v) {
        return Err(UnitsError::EpsOutOfRange {
            text: s.to_string(),
            value: v,
        });
    }
    Ok(v)
}

/// A quantity as it was given: a decimal or a fraction like `8/255`, parsed where it is used.
/// A file may give a number or a string; it is kept (and written back) as text, so `8/255`
/// stays exact and a recorded `"0.1"` reads as before.
#[derive(Debug, Clone, PartialEq)]
pub struct Fraction(pub String);

impl Fraction {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Fraction {
    fn from(s: &str) -> Self {
        Fraction(s.to_string())
    }
}

impl From<String> for Fraction {
    fn from(s: String) -> Self {
        Fraction(s)
    }
}

impl std::fmt::Display for Fraction {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for Fraction {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Fraction {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Given {
            Integer(i64),
            Number(f64),
            Text(String),
        }
        Ok(Fraction(
            match Given::deserialize(d).map_err(|_| {
                serde::de::Error::custom("expected a number or a fraction like \"8/255\"")
            })? {
                Given::Integer(v) => v.to_string(),
                Given::Number(v) => v.to_string(),
                Given::Text(s) => s,
            },
        ))
    }
}

/// Serde for a closed set of names through `Display` and `FromStr`, so a file spells each
/// value as the command line does and a bad one is refused with the type's own message.
macro_rules! serde_as_text {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use serde_as_text;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_and_decimals() {
        assert!((parse_fraction("8/255").unwrap() - 0.031372549).abs() < 1e-9);
        assert_eq!(parse_fraction("0.1").unwrap(), 0.1);
        assert!(parse_fraction("8/0").is_err());
        assert!(parse_fraction("abc").is_err());
        assert!(parse_eps("8").is_err());
        assert!(parse_eps("-0.1").is_err());
        assert_eq!(parse_eps("0").unwrap(), 0.0);
    }

    #[test]
    fn errors_name_the_text_and_the_fix() {
        assert_eq!(
            parse_fraction("8/x").unwrap_err(),
            UnitsError::NotANumber("8/x".into())
        );
        assert!(parse_eps("8")
            .unwrap_err()
            .to_string()
            .contains("[0,1] pixel scale"));
        assert!(parse_eps("-0").unwrap().is_sign_positive());
    }

    #[test]
    fn fractions_read_numbers_and_text_and_write_text() {
        #[derive(serde::Deserialize, serde::Serialize)]
        struct T {
            eps: Fraction,
        }
        for (given, text) in [
            ("eps = 0.1", "0.1"),
            ("eps = '8/255'", "8/255"),
            ("eps = 0", "0"),
        ] {
            let t: T = toml::from_str(given).unwrap();
            assert_eq!(t.eps.as_str(), text);
        }
        let json = serde_json::to_string(&T {
            eps: "8/255".into(),
        })
        .unwrap();
        assert_eq!(json, r#"{"eps":"8/255"}"#);
        assert!(toml::from_str::<T>("eps = true").is_err());
    }
}
