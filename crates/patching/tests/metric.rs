//! The task metrics: values against direct f64 computations, KL's zero at the full model, and
//! every metric's loss gradient against central finite differences.

use burn::backend::Autodiff;
use burn::tensor::{Tensor, TensorData};
use patching::{Metric, UnknownMetric};
use transformer::CpuBackend;

type B = CpuBackend;
type A = Autodiff<CpuBackend>;

const ROWS: usize = 3;
const VOCAB: usize = 7;
const ANSWERS: [(u32, u32); ROWS] = [(1, 4), (6, 0), (2, 3)];

/// Seeded, varied logits [ROWS, VOCAB].
fn logits(seed: u32) -> Vec<f32> {
    (0..ROWS * VOCAB).map(|i| (((i as u32).wrapping_mul(2_654_435_761) ^ seed.wrapping_mul(40_503)) % 1000) as f32 / 250.0 - 2.0).collect()
}

fn tensor<Bk: burn::tensor::backend::Backend>(values: &[f32]) -> Tensor<Bk, 2> {
    Tensor::from_data(TensorData::new(values.to_vec(), [ROWS, VOCAB]), &Default::default())
}

fn log_softmax_f64(row: &[f32]) -> Vec<f64> {
    let max = row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
    let z: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
    row.iter().map(|&x| x as f64 - max - z.ln()).collect()
}

/// The metric of one row, written out in f64.
fn direct(metric: Metric, row: &[f32], full: &[f32], (c, i): (u32, u32)) -> f64 {
    let (lp, lq) = (log_softmax_f64(row), log_softmax_f64(full));
    match metric {
        Metric::LogitDifference => row[c as usize] as f64 - row[i as usize] as f64,
        Metric::ProbabilityDifference => lp[c as usize].exp() - lp[i as usize].exp(),
        Metric::AnswerNll => -lp[c as usize],
        Metric::Kl => lq.iter().zip(&lp).map(|(q, p)| q.exp() * (q - p)).sum(),
        Metric::Value => row[c as usize] as f64,
        Metric::L2 => row.iter().zip(full).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum(),
    }
}

#[test]
fn values_match_a_direct_computation() {
    let (x, full) = (logits(1), logits(2));
    for metric in Metric::ALL {
        let got = metric.values(tensor::<B>(&x), &ANSWERS, 1, &tensor::<B>(&full));
        for (r, &g) in got.iter().enumerate() {
            let want = direct(metric, &x[r * VOCAB..(r + 1) * VOCAB], &full[r * VOCAB..(r + 1) * VOCAB], ANSWERS[r]);
            assert!((g as f64 - want).abs() < 1e-5, "{metric} row {r}: {g} vs {want}");
        }
    }
}

#[test]
fn kl_of_the_full_model_is_zero_and_replicas_read_the_same_reference() {
    let full = logits(3);
    let kl = Metric::Kl.values(tensor::<B>(&full), &ANSWERS, 1, &tensor::<B>(&full));
    assert!(kl.iter().all(|&v| v.abs() < 1e-6), "KL(p ‖ p) = {kl:?}");
    // Two replicas: the full model itself, then another run; each row compares with its pair's row.
    let other = logits(4);
    let stacked: Vec<f32> = full.iter().chain(&other).copied().collect();
    let rows = Tensor::<B, 2>::from_data(TensorData::new(stacked, [2 * ROWS, VOCAB]), &Default::default());
    let both = Metric::Kl.values(rows, &ANSWERS, 2, &tensor::<B>(&full));
    let alone = Metric::Kl.values(tensor::<B>(&other), &ANSWERS, 1, &tensor::<B>(&full));
    assert!(both[..ROWS].iter().all(|&v| v.abs() < 1e-6));
    assert_eq!(&both[ROWS..], &alone[..]);
    assert!(alone.iter().all(|&v| v > 1e-3), "different logits diverge: {alone:?}");
}

#[test]
fn loss_gradients_match_finite_differences() {
    let (x, full) = (logits(5), logits(6));
    let loss_at = |metric: Metric, values: &[f32]| -> f64 { metric.loss(tensor::<B>(values), &ANSWERS, &tensor::<B>(&full)).into_scalar() as f64 };
    for metric in Metric::ALL {
        let leaf = tensor::<A>(&x).require_grad();
        let grads = metric.loss(leaf.clone(), &ANSWERS, &tensor::<A>(&full)).backward();
        let analytic: Vec<f32> = leaf.grad(&grads).unwrap().into_data().to_vec().unwrap();
        let eps = 1e-2f32;
        for (k, &g) in analytic.iter().enumerate() {
            let (mut up, mut down) = (x.clone(), x.clone());
            up[k] += eps;
            down[k] -= eps;
            let numeric = (loss_at(metric, &up) - loss_at(metric, &down)) / (2.0 * eps as f64);
            assert!((g as f64 - numeric).abs() < 2e-3, "{metric}: ∂loss/∂logit[{k}] = {g}, finite difference {numeric}");
        }
        assert!(analytic.iter().any(|&g| g.abs() > 1e-2), "{metric}: the gradient is not trivially zero");
    }
}

#[test]
fn the_loss_is_oriented_so_that_lower_is_better() {
    let (x, full) = (logits(7), logits(8));
    for metric in Metric::ALL {
        let values: f64 = metric.values(tensor::<B>(&x), &ANSWERS, 1, &tensor::<B>(&full)).iter().map(|&v| v as f64).sum();
        let loss = metric.loss(tensor::<B>(&x), &ANSWERS, &tensor::<B>(&full)).into_scalar() as f64;
        let sign = if metric.higher_is_better() { -1.0 } else { 1.0 };
        assert!((loss - sign * values).abs() < 1e-5, "{metric}: loss {loss}, values {values}");
        assert_eq!(metric.loss_of(1.5), sign * 1.5);
    }
}

#[test]
fn names_parse_and_unknown_names_are_errors() {
    for (metric, name) in Metric::ALL.iter().zip(Metric::NAMES) {
        assert_eq!(name.parse::<Metric>(), Ok(*metric));
        assert_eq!(metric.to_string(), name);
    }
    let err = "logit_diff".parse::<Metric>().unwrap_err();
    assert_eq!(err, UnknownMetric("logit_diff".into()));
    assert!(err.to_string().contains("logit-diff, kl, prob-diff, nll"), "{err}");
}
