//! Faithfulness and its summaries (mib-spec §6).

/// m(N) and m(∅) too close for the ratio f = (m(C) − m(∅)) / (m(N) − m(∅)) to mean anything.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "faithfulness is undefined: m(N) = {m_full:.6} and m(∅) = {m_empty:.6} differ by less than {threshold} (the model barely distinguishes clean from ablated inputs)"
)]
pub struct FaithfulnessUndefined {
    /// m(N), the full model's mean.
    pub m_full: f64,
    /// m(∅), the empty circuit's mean.
    pub m_empty: f64,
    /// The smallest |m(N) − m(∅)| accepted.
    pub threshold: f64,
}

/// Smallest |m(N) − m(∅)|, in logits, for which faithfulness is reported.
pub const MIN_EFFECT: f64 = 1e-3;

/// f(C) = (m(C) − m(∅)) / (m(N) − m(∅)), each m a mean over the evaluation split (a ratio of means).
pub fn faithfulness(m_circuit: f64, m_full: f64, m_empty: f64) -> Result<f64, FaithfulnessUndefined> {
    let effect = m_full - m_empty;
    if effect.is_nan() || effect.abs() < MIN_EFFECT {
        return Err(FaithfulnessUndefined { m_full, m_empty, threshold: MIN_EFFECT });
    }
    Ok((m_circuit - m_empty) / effect)
}

/// Trapezoid area on the linear fraction axis of g(f_i).
fn trapezoid(fractions: &[f64], f: &[f64], g: impl Fn(f64) -> f64) -> f64 {
    assert_eq!(fractions.len(), f.len(), "one faithfulness value per fraction");
    fractions.windows(2).zip(f.windows(2)).map(|(x, y)| (x[1] - x[0]) * (g(y[0]) + g(y[1])) / 2.0).sum()
}

/// Circuit performance ratio: area under f (higher is better; signed-score circuits).
pub fn cpr(fractions: &[f64], f: &[f64]) -> f64 {
    trapezoid(fractions, f, |v| v)
}

/// Circuit-model difference: area under |1 − f| (lower is better; absolute-score circuits).
pub fn cmd(fractions: &[f64], f: &[f64]) -> f64 {
    trapezoid(fractions, f, |v| (1.0 - v).abs())
}
