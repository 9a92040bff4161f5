//! Two-digit arithmetic in MIB's prompt format, "Q: How much is 23 plus 45? A: " (the trailing space
//! is MIB's; the answer is the bare number). The counterfactual is another random problem of the
//! same shape whose result differs, and neither result is a prefix of the other ("3" vs "35"):
//! such a pair has no differing token under digit-splitting tokenizers and would be dropped.

use serde_json::json;

use crate::example::Example;
use crate::rng::Rng;

/// Which operation a problem uses.
#[derive(Clone, Copy)]
enum Op {
    Plus,
    Minus,
}

impl Op {
    fn word(self) -> &'static str {
        match self {
            Op::Plus => "plus",
            Op::Minus => "minus",
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            Op::Plus => "+",
            Op::Minus => "-",
        }
    }

    /// Two-digit operands; for subtraction the first is at least the second, so results are
    /// non-negative (as in MIB's subtraction set).
    fn operands(self, rng: &mut Rng) -> (u32, u32) {
        let a = rng.range(10, 99);
        match self {
            Op::Plus => (a, rng.range(10, 99)),
            Op::Minus => (a, rng.range(10, a)),
        }
    }

    fn apply(self, a: u32, b: u32) -> u32 {
        match self {
            Op::Plus => a + b,
            Op::Minus => a - b,
        }
    }
}

fn prompt(op: Op, a: u32, b: u32) -> String {
    format!("Q: How much is {a} {} {b}? A: ", op.word())
}

fn draw(rng: &mut Rng, op: Op) -> Example {
    let (a, b) = op.operands(rng);
    let result = op.apply(a, b);
    // Redraw until the results' digits differ somewhere; a handful of tries at most.
    let digits = result.to_string();
    let (ca, cb) = loop {
        let (ca, cb) = op.operands(rng);
        let other = op.apply(ca, cb).to_string();
        if !digits.starts_with(&other) && !other.starts_with(&digits) {
            break (ca, cb);
        }
    };
    let cf_result = op.apply(ca, cb);
    Example {
        id: String::new(),
        clean: prompt(op, a, b),
        counterfactual: prompt(op, ca, cb),
        abc_counterfactual: None,
        correct: result.to_string(),
        incorrect: cf_result.to_string(),
        metadata: json!({
            "operator": op.symbol(),
            "operand1": a,
            "operand2": b,
            "label": result,
            "counterfactual_operand1": ca,
            "counterfactual_operand2": cb,
            "counterfactual_label": cf_result,
        })
        .as_object()
        .cloned()
        .unwrap_or_default(),
    }
}

/// One addition example.
pub(crate) fn draw_addition(rng: &mut Rng) -> Example {
    draw(rng, Op::Plus)
}

/// One subtraction example (non-negative results).
pub(crate) fn draw_subtraction(rng: &mut Rng) -> Example {
    draw(rng, Op::Minus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_two_digit_with_the_right_answers() {
        let mut rng = Rng::new(5);
        for (op, draw) in [(Op::Plus, draw_addition as fn(&mut Rng) -> Example), (Op::Minus, draw_subtraction)] {
            for _ in 0..500 {
                let e = draw(&mut rng);
                let m = &e.metadata;
                let n = |k: &str| m[k].as_u64().unwrap() as u32;
                for k in ["operand1", "operand2", "counterfactual_operand1", "counterfactual_operand2"] {
                    assert!((10..=99).contains(&n(k)), "{e:?}");
                }
                assert_eq!(e.correct, op.apply(n("operand1"), n("operand2")).to_string());
                assert_eq!(e.incorrect, op.apply(n("counterfactual_operand1"), n("counterfactual_operand2")).to_string());
                assert!(!e.correct.starts_with(&e.incorrect) && !e.incorrect.starts_with(&e.correct), "{e:?}");
                assert_eq!(e.clean, prompt(op, n("operand1"), n("operand2")));
                assert!(e.clean.starts_with("Q: How much is ") && e.clean.ends_with("? A: "));
            }
        }
    }
}
