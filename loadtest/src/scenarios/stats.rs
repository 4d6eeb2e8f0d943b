//! Statistics more than one scenario uses on its own figures.

/// The index of the round with the median ratio (rounds without a ratio sort first; of an
/// even number, the upper middle).
pub fn median_round(ratios: &[Option<f64>]) -> usize {
    let mut order: Vec<usize> = (0..ratios.len()).collect();
    order.sort_by(|&x, &y| {
        ratios[x]
            .unwrap_or(-1.0)
            .total_cmp(&ratios[y].unwrap_or(-1.0))
    });
    order.get(ratios.len() / 2).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_round_is_the_middle_ratio() {
        assert_eq!(median_round(&[Some(0.3), Some(0.6), Some(0.4)]), 2);
        assert_eq!(median_round(&[Some(0.5)]), 0);
        assert_eq!(median_round(&[None, Some(0.2)]), 1);
        assert_eq!(median_round(&[Some(0.9), None, Some(0.1)]), 2);
        assert_eq!(median_round(&[]), 0);
    }
}
