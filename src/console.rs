//! What the command line writes on a terminal: progress bars on stderr,
//! and a command's output on stdout without `print!`'s panic.

use anyhow::Context;

/// A progress bar of `len` steps (`what`: their name, after `pos/len`) on
/// stderr, or a hidden one when `show` is false (not a terminal).
pub(crate) fn progress_bar(show: bool, len: u64, what: &str) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    let template =
        format!("{{elapsed_precise}} [{{bar:40}}] {{pos}}/{{len}} {what} ({{eta}} left)");
    if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Writes a command's output: an error, not `print!`'s panic, when it
/// cannot (a reader that is gone is [`broken_pipe`]: the command ends
/// without a word).
pub(crate) fn to_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write to standard output")
}
