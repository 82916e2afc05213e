//! Parsing of quantities given on the [0,1] pixel scale: `0.0314` or `8/255`.

/// Parses a decimal or a fraction `a/b`.
pub fn parse_fraction(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let value = match s.split_once('/') {
        Some((a, b)) => {
            let a: f64 = a
                .trim()
                .parse()
                .map_err(|_| format!("'{s}' is not a number or a fraction like 8/255"))?;
            let b: f64 = b
                .trim()
                .parse()
                .map_err(|_| format!("'{s}' is not a number or a fraction like 8/255"))?;
            if b == 0.0 {
                return Err(format!("'{s}': division by zero"));
            }
            a / b
        }
        None => s
            .parse()
            .map_err(|_| format!("'{s}' is not a number or a fraction like 8/255"))?,
    };
    if !value.is_finite() {
        return Err(format!("'{s}' is not finite"));
    }
    Ok(value)
}

/// An ε on the [0,1] pixel scale: non-negative and at most 1.
pub fn parse_eps(s: &str) -> Result<f64, String> {
    let v = parse_fraction(s)?;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!(
            "eps {s} = {v} is outside [0, 1]; eps is on the [0,1] pixel scale (8/255 ≈ 0.0314)"
        ));
    }
    Ok(v)
}

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
}
