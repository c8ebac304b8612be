//! Resource-pack units as exact thousandths, so that "1.5 for 5 s" stays `"1.5"` and never
//! becomes `"1.4999999"` on the wire (`final_unit_deduction` is a decimal string).

use std::fmt;

/// A non-negative amount of units, stored in thousandths.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Units(u64);

impl Units {
    /// Zero units.
    pub const ZERO: Units = Units(0);

    /// Converts a configured decimal amount; `None` for negative, infinite or NaN values.
    pub fn from_f64(value: f64) -> Option<Self> {
        if !value.is_finite() || !(0.0..=1e12).contains(&value) {
            return None;
        }
        // Rounding to thousandths is the precision Kling shows; the cast is in range by the
        // check above.
        Some(Units((value * 1000.0).round() as u64))
    }

    /// The amount as a float, for JSON fields typed as floats (`remaining_quantity`).
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    /// `self * factor / divisor`, rounded to the nearest thousandth.
    pub fn scaled(self, factor: u64, divisor: u64) -> Self {
        if divisor == 0 {
            return Units::ZERO;
        }
        let product = u128::from(self.0) * u128::from(factor);
        let rounded = (product + u128::from(divisor) / 2) / u128::from(divisor);
        Units(u64::try_from(rounded).unwrap_or(u64::MAX))
    }

    /// Sum, saturating.
    pub fn saturating_add(self, other: Units) -> Units {
        Units(self.0.saturating_add(other.0))
    }

    /// Difference, floored at zero.
    pub fn saturating_sub(self, other: Units) -> Units {
        Units(self.0.saturating_sub(other.0))
    }

    /// Whether the amount is zero.
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Units {
    /// Shortest decimal form: `1`, `1.5`, `0.125`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / 1000;
        let frac = self.0 % 1000;
        if frac == 0 {
            return write!(f, "{whole}");
        }
        let digits = format!("{frac:03}");
        write!(f, "{whole}.{}", digits.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_without_float_noise() {
        let per_second = Units::from_f64(0.3).unwrap();
        assert_eq!(per_second.scaled(5, 1).to_string(), "1.5");
        assert_eq!(per_second.scaled(10, 1).to_string(), "3");
        assert_eq!(Units::from_f64(0.2).unwrap().scaled(5, 1).to_string(), "1");
        assert_eq!(Units::from_f64(0.125).unwrap().to_string(), "0.125");
        assert_eq!(Units::ZERO.to_string(), "0");
    }

    #[test]
    fn rejects_negative_and_non_finite_amounts() {
        assert!(Units::from_f64(-0.5).is_none());
        assert!(Units::from_f64(f64::NAN).is_none());
        assert!(Units::from_f64(f64::INFINITY).is_none());
    }

    #[test]
    fn subtraction_floors_at_zero() {
        let one = Units::from_f64(1.0).unwrap();
        let two = Units::from_f64(2.0).unwrap();
        assert_eq!(one.saturating_sub(two), Units::ZERO);
        assert_eq!(two.saturating_sub(one), one);
    }
}
