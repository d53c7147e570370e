//! Progress for long runs (`contend`, `bench`): a bar on stderr when it is a
//! terminal, nothing at all when it is not (a pipe, a log, CI).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar counting to `total`, each step called `unit` (or named by the
/// message set later).
pub fn progress_bar(total: u64, unit: &str) -> ProgressBar {
    // indicatif draws nothing to a stderr that is not a terminal.
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("  {bar:30} {pos}/{len} {msg} [{elapsed}]").expect("the template is valid"),
    );
    bar.set_message(unit.to_owned());
    bar
}
