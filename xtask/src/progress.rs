//! Progress bars on a terminal, plain lines otherwise (CI logs, pipes): indicatif draws nothing
//! when stderr is not a terminal, so messages must then be printed directly.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `len` steps with a prefix, hidden when stderr is not a terminal.
pub fn bar(len: u64, prefix: &str, unit: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    let template = format!("{{prefix}} [{{bar:30}}] {{pos}}/{{len}} {unit}, {{elapsed}} (ETA {{eta}}) {{msg}}");
    bar.set_style(ProgressStyle::with_template(&template).expect("a valid template").progress_chars("=> "));
    bar.set_prefix(prefix.to_string());
    bar
}

/// Prints a line above the bar, or plainly when there is no bar.
pub fn line(bar: &ProgressBar, message: String) {
    if bar.is_hidden() {
        println!("{message}");
    } else {
        bar.println(message);
    }
}
