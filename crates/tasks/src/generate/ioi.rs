//! Indirect object identification in the style of Wang et al. (2022) and MIB: two people are
//! introduced, one of them (the subject, S) is mentioned again and gives something to the other
//! (the indirect object, IO), whose name is the answer.

use serde_json::json;

use crate::example::Example;
use crate::rng::Rng;

/// Sentence frames. `{X}` and `{Y}` are the two introduced names in order, `{S}` the repeated
/// subject; the prompt ends where the IO's name comes next. Every name follows a space, so each
/// one is a single " Name" token and swapping names never changes the token count.
const TEMPLATES: [&str; 34] = [
    "Then, {X} and {Y} went to the {place}. {S} gave a {object} to",
    "Then, {X} and {Y} had a lot of fun at the {place}. {S} gave a {object} to",
    "Then, {X} and {Y} were working at the {place}. {S} decided to give a {object} to",
    "Then, {X} and {Y} were thinking about going to the {place}. {S} wanted to give a {object} to",
    "Then, {X} and {Y} had a long argument, and afterwards {S} said to",
    "After {X} and {Y} went to the {place}, {S} gave a {object} to",
    "When {X} and {Y} got a {object} at the {place}, {S} decided to give it to",
    "When {X} and {Y} got a {object} at the {place}, {S} decided to give the {object} to",
    "While {X} and {Y} were working at the {place}, {S} gave a {object} to",
    "While {X} and {Y} were commuting to the {place}, {S} gave a {object} to",
    "After the lunch, {X} and {Y} went to the {place}. {S} gave a {object} to",
    "Afterwards, {X} and {Y} went to the {place}. {S} gave a {object} to",
    "Then, {X} and {Y} had a long argument. Afterwards {S} said to",
    "The {place} {X} and {Y} went to had a {object}. {S} gave it to",
    "Friends {X} and {Y} found a {object} at the {place}. {S} gave it to",
    "When {X} and {Y} arrived at the {place}, {S} handed a {object} to",
    "As {X} and {Y} walked into the {place}, {S} passed a {object} to",
    "Yesterday, {X} and {Y} met at the {place}. {S} brought a {object} for",
    "On Sunday, {X} and {Y} visited the {place}, and {S} gave a {object} to",
    "Later, {X} and {Y} cleaned the {place}. {S} threw a {object} to",
    "Once {X} and {Y} reached the {place}, {S} showed a {object} to",
    "Before {X} and {Y} left the {place}, {S} returned a {object} to",
    "In the morning, {X} and {Y} went to the {place}. {S} sold a {object} to",
    "At the {place}, {X} and {Y} found a {object}. {S} gave it to",
    "Together, {X} and {Y} spent the day at the {place}. In the end, {S} gave a {object} to",
    "Last week, {X} and {Y} stopped by the {place}. {S} offered a {object} to",
    "During the party at the {place}, {X} and {Y} talked for hours. {S} gave a {object} to",
    "After {X} and {Y} finished their work at the {place}, {S} sent a {object} to",
    "When {X} and {Y} came back from the {place}, {S} gave a {object} to",
    "While {X} and {Y} were waiting at the {place}, {S} lent a {object} to",
    "Then, {X} and {Y} went shopping at the {place}. {S} bought a {object} for",
    "After a long day at the {place}, {X} and {Y} sat down. {S} gave a {object} to",
    "One day, {X} and {Y} were at the {place} together. {S} tossed a {object} to",
    "Earlier, {X} and {Y} drove to the {place}. {S} passed the {object} to",
];

/// First names that are one token with a leading space in GPT-2's and SmolLM2's vocabularies
/// (checked against SmolLM2 by the tasks integration test).
pub(crate) const NAMES: [&str; 103] = [
    "Michael",
    "Christopher",
    "Jessica",
    "Matthew",
    "Ashley",
    "Jennifer",
    "Joshua",
    "Amanda",
    "Daniel",
    "David",
    "James",
    "Robert",
    "John",
    "Joseph",
    "Andrew",
    "Ryan",
    "Jason",
    "Justin",
    "Sarah",
    "William",
    "Jonathan",
    "Stephanie",
    "Brian",
    "Nicole",
    "Nicholas",
    "Anthony",
    "Heather",
    "Eric",
    "Elizabeth",
    "Adam",
    "Melissa",
    "Kevin",
    "Steven",
    "Thomas",
    "Timothy",
    "Christina",
    "Rachel",
    "Laura",
    "Lauren",
    "Richard",
    "Jeffrey",
    "Amy",
    "Michelle",
    "Jeremy",
    "Benjamin",
    "Emily",
    "Aaron",
    "Charles",
    "Rebecca",
    "Jacob",
    "Stephen",
    "Patrick",
    "Sean",
    "Erin",
    "Jamie",
    "Kelly",
    "Samantha",
    "Nathan",
    "Sara",
    "Paul",
    "Angela",
    "Tyler",
    "Scott",
    "Katherine",
    "Andrea",
    "Gregory",
    "Mary",
    "Lisa",
    "Kenneth",
    "Bryan",
    "Jose",
    "Alexander",
    "Jesse",
    "Katie",
    "Shannon",
    "Christine",
    "Allison",
    "Bradley",
    "Samuel",
    "Peter",
    "George",
    "Frank",
    "Henry",
    "Alice",
    "Emma",
    "Anna",
    "Susan",
    "Linda",
    "Karen",
    "Nancy",
    "Betty",
    "Helen",
    "Sandra",
    "Ruth",
    "Maria",
    "Diana",
    "Julia",
    "Martin",
    "Simon",
    "Oliver",
    "Lucas",
    "Hannah",
    "Olivia",
];

const PLACES: [&str; 16] = [
    "store",
    "garden",
    "restaurant",
    "school",
    "hospital",
    "office",
    "house",
    "station",
    "park",
    "library",
    "market",
    "museum",
    "beach",
    "cafe",
    "airport",
    "gym",
];

/// Objects that take the article "a" and fit every template.
const OBJECTS: [&str; 16] =
    ["ring", "bone", "basketball", "computer", "necklace", "drink", "snack", "book", "bottle", "pencil", "candle", "camera", "guitar", "hat", "cake", "letter"];

/// Fills a template: `x`, `y` introduced in that order, `s` repeated.
fn fill(template: &str, x: &str, y: &str, s: &str, place: &str, object: &str) -> String {
    template.replace("{place}", place).replace("{object}", object).replace("{X}", x).replace("{Y}", y).replace("{S}", s)
}

/// One IOI example: clean, s2_io_flip counterfactual (the repeated name becomes the IO, so the
/// answer flips to the subject), and the ABC counterfactual (three other names, no repetition).
pub(crate) fn draw(rng: &mut Rng) -> Example {
    let template_index = rng.below(TEMPLATES.len());
    let template = TEMPLATES[template_index];
    let names = rng.distinct(NAMES.len(), 5);
    let (io, s) = (NAMES[names[0]], NAMES[names[1]]);
    let (ra, rb, rc) = (NAMES[names[2]], NAMES[names[3]], NAMES[names[4]]);
    let place = *rng.pick(&PLACES);
    let object = *rng.pick(&OBJECTS);
    // ABBA: the IO is introduced first; BABA: the subject is.
    let abba = rng.below(2) == 0;
    let (x, y) = if abba { (io, s) } else { (s, io) };
    Example {
        id: String::new(),
        clean: fill(template, x, y, s, place, object),
        counterfactual: fill(template, x, y, io, place, object),
        abc_counterfactual: Some(fill(template, ra, rb, rc, place, object)),
        correct: format!(" {io}"),
        incorrect: format!(" {s}"),
        metadata: json!({
            "template": template_index,
            "order": if abba { "ABBA" } else { "BABA" },
            "indirect_object": io,
            "subject": s,
            "place": place,
            "object": object,
            "random_a": ra,
            "random_b": rb,
            "random_c": rc,
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
    fn templates_are_well_formed() {
        assert!(TEMPLATES.len() >= 30);
        for t in TEMPLATES {
            assert_eq!(t.matches("{X}").count(), 1, "{t}");
            assert_eq!(t.matches("{Y}").count(), 1, "{t}");
            assert_eq!(t.matches("{S}").count(), 1, "{t}");
            assert!(t.find("{Y}") < t.find("{S}"), "{t}");
            assert!(!t.starts_with('{'), "a name at the start has no leading space: {t}");
            let filled = fill(t, "A", "B", "B", "p", "o");
            assert!(!filled.contains('{') && !filled.ends_with(' '), "{filled}");
        }
        let distinct: std::collections::HashSet<_> = NAMES.iter().collect();
        assert_eq!(distinct.len(), NAMES.len());
    }

    /// How many times `name` occurs as a whole word.
    fn count(text: &str, name: &str) -> usize {
        text.split(|c: char| !c.is_alphabetic()).filter(|w| *w == name).count()
    }

    #[test]
    fn counterfactuals_swap_the_right_names() {
        let mut rng = Rng::new(3);
        for _ in 0..200 {
            let e = draw(&mut rng);
            let m = &e.metadata;
            let name = |k: &str| m[k].as_str().unwrap().to_string();
            let (io, s) = (name("indirect_object"), name("subject"));
            assert_eq!(e.correct, format!(" {io}"));
            assert_eq!(e.incorrect, format!(" {s}"));
            // Clean: S twice, IO once. s2_io_flip: IO twice, S once. ABC: neither.
            assert_eq!((count(&e.clean, &s), count(&e.clean, &io)), (2, 1), "{}", e.clean);
            assert_eq!((count(&e.counterfactual, &s), count(&e.counterfactual, &io)), (1, 2), "{}", e.counterfactual);
            let abc = e.abc_counterfactual.as_deref().unwrap();
            assert_eq!((count(abc, &s), count(abc, &io)), (0, 0), "{abc}");
            for k in ["random_a", "random_b", "random_c"] {
                assert_eq!(count(abc, &name(k)), 1, "{abc}");
            }
        }
    }
}
