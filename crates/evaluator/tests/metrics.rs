//! CPR / CMD against the values MIB publishes for its reference curves (mib-spec §6).

use evaluator::{MIB_FRACTIONS, cmd, cpr, faithfulness};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn perfect_curve() {
    let f = [1.0; 10];
    assert!(close(cpr(&MIB_FRACTIONS, &f), 0.999));
    assert!(close(cmd(&MIB_FRACTIONS, &f), 0.0));
}

#[test]
fn random_baseline_curve() {
    let mut f = [0.0; 10];
    f[9] = 1.0;
    assert!(close(cpr(&MIB_FRACTIONS, &f), 0.25), "{}", cpr(&MIB_FRACTIONS, &f));
    assert!(close(cmd(&MIB_FRACTIONS, &f), 0.749), "{}", cmd(&MIB_FRACTIONS, &f));
}

#[test]
fn cmd_counts_overshoot_as_distance() {
    let f = [2.0; 10];
    assert!(close(cmd(&MIB_FRACTIONS, &f), 0.999));
    assert!(close(cpr(&MIB_FRACTIONS, &f), 1.998));
}

#[test]
fn faithfulness_is_a_ratio_and_refuses_a_vanishing_denominator() {
    assert!(close(faithfulness(3.0, 4.0, 2.0).unwrap(), 0.5));
    assert!(close(faithfulness(2.0, 4.0, 2.0).unwrap(), 0.0));
    let err = faithfulness(1.0, 2.0, 2.0 - 1e-5).unwrap_err();
    assert!(err.to_string().contains("undefined"), "{err}");
    assert!(faithfulness(1.0, f64::NAN, 0.0).is_err(), "NaN never passes as a denominator");
}
