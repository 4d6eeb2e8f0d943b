//! The figures of one `bench` round, and how R_http and R_copy combine into R_ref.

use serde::Serialize;

/// One round of the bench scenario: the three rates measured back to back.
#[derive(Debug, Clone, Serialize)]
pub struct RoundSummary {
    pub round: usize,
    pub r_http: Option<f64>,
    pub r_copy: f64,
    pub r_daemon: Option<f64>,
    pub r_ref: Option<f64>,
    pub ratio: Option<f64>,
}

/// `1 / (1/a + 1/b)`: the rate of doing both things one after the other.
pub fn r_ref(r_http: f64, r_copy: f64) -> Option<f64> {
    (r_http > 0.0 && r_copy > 0.0).then(|| 1.0 / (1.0 / r_http + 1.0 / r_copy))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn r_ref_is_the_harmonic_combination() {
        assert_eq!(r_ref(100.0, 100.0), Some(50.0));
        let r = r_ref(40_000.0, 120_000.0).unwrap();
        assert!((r - 30_000.0).abs() < 1e-6);
        assert_eq!(r_ref(0.0, 100.0), None);
    }
}
