//! Copy-colors multiple choice: "`The <object> is <color>.`" then a question with four lettered
//! options and "Answer:". The counterfactual asks the same question with the option letters
//! permuted so that the correct option carries a different letter; its answer is that letter.

use serde_json::json;

use crate::example::Example;
use crate::rng::Rng;

const OBJECTS: [&str; 40] = [
    "apple", "banana", "box", "car", "chair", "table", "cup", "ball", "shirt", "hat", "book", "pen", "bag", "bottle", "lamp", "door", "flower", "bird", "kite",
    "boat", "bike", "phone", "shoe", "sock", "umbrella", "towel", "pillow", "blanket", "bucket", "candle", "clock", "fence", "house", "leaf", "mug", "plate",
    "ribbon", "scarf", "truck", "window",
];

const COLORS: [&str; 11] = ["red", "blue", "green", "yellow", "black", "white", "brown", "orange", "purple", "pink", "gray"];

const LETTERS: [&str; 4] = ["A", "B", "C", "D"];

fn prompt(object: &str, color: &str, labels: &[&str], options: &[&str]) -> String {
    let mut text = format!("The {object} is {color}. What color is the {object}?\n");
    for (label, option) in labels.iter().zip(options) {
        text.push_str(&format!("{label}. {option}\n"));
    }
    text.push_str("Answer:");
    text
}

/// One MCQA example; answers are " A" .. " D", the natural continuation of "Answer:".
pub(crate) fn draw(rng: &mut Rng) -> Example {
    let object = *rng.pick(&OBJECTS);
    let picks = rng.distinct(COLORS.len(), 4);
    let color = COLORS[picks[0]];
    // The correct colour sits at a random position among three distinct distractors.
    let mut options: Vec<&str> = picks.iter().map(|&i| COLORS[i]).collect();
    let answer = rng.below(4);
    options.swap(0, answer);
    // Counterfactual letters: a permutation that gives the correct position another letter.
    let perm = loop {
        let perm = rng.distinct(4, 4);
        if perm[answer] != answer {
            break perm;
        }
    };
    let cf_labels: Vec<&str> = perm.iter().map(|&i| LETTERS[i]).collect();
    Example {
        id: String::new(),
        clean: prompt(object, color, &LETTERS, &options),
        counterfactual: prompt(object, color, &cf_labels, &options),
        abc_counterfactual: None,
        correct: format!(" {}", LETTERS[answer]),
        incorrect: format!(" {}", cf_labels[answer]),
        metadata: json!({
            "object": object,
            "color": color,
            "choices": options,
            "answer_index": answer,
            "counterfactual_labels": cf_labels,
        })
        .as_object()
        .cloned()
        .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_letter_labels_the_stated_color_in_both_prompts() {
        let mut rng = Rng::new(9);
        for _ in 0..300 {
            let e = draw(&mut rng);
            let color = e.metadata["color"].as_str().unwrap();
            assert!(e.clean.contains(&format!("\n{}. {color}\n", e.correct.trim())), "{}", e.clean);
            assert!(e.counterfactual.contains(&format!("\n{}. {color}\n", e.incorrect.trim())), "{}", e.counterfactual);
            assert_ne!(e.correct, e.incorrect);
            assert!(e.clean.ends_with("\nAnswer:"));
            assert_eq!(e.clean.lines().count(), e.counterfactual.lines().count());
        }
    }
}
