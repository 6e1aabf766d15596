//! Progress for long work, on a terminal only: reading large flow files (`learn`, `check`,
//! `graph`, `lint`, `blast-radius`) and listing the cluster (`export --from-cluster`). Bars
//! are drawn on stderr when it is a terminal, the log format is text, `CI` is unset and `TERM`
//! is not `dumb`; otherwise every bar is hidden, so pipes, files and JSON output never see
//! one. Log lines are written with the bars suspended, so the two never mix.

use std::{
    io::{self, IsTerminal as _, Read, Write},
    sync::OnceLock,
    time::Duration,
};

use indicatif::{MultiProgress, ProgressBar, ProgressBarIter, ProgressDrawTarget, ProgressStyle};

static BARS: OnceLock<Option<MultiProgress>> = OnceLock::new();

/// Whether bars are drawn, from the facts that decide it.
pub fn should_draw(text_logs: bool, terminal: bool, ci: Option<&str>, term: Option<&str>) -> bool {
    text_logs && terminal && ci.is_none_or(str::is_empty) && term != Some("dumb")
}

/// Decides once, from the environment, whether bars are drawn.
pub fn init(text_logs: bool) {
    BARS.get_or_init(|| {
        let ci = std::env::var("CI").ok();
        let term = std::env::var("TERM").ok();
        should_draw(
            text_logs,
            io::stderr().is_terminal(),
            ci.as_deref(),
            term.as_deref(),
        )
        .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
    });
}

fn bars() -> Option<&'static MultiProgress> {
    BARS.get().and_then(Option::as_ref)
}

/// A bar over `total` bytes (a spinner counting bytes when the total is unknown).
pub fn bytes(total: Option<u64>, what: &str) -> ProgressBar {
    let Some(m) = bars() else {
        return ProgressBar::hidden();
    };
    let bar = match total {
        Some(t) => ProgressBar::new(t).with_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {msg} {bytes} ({bytes_per_sec})")
                .expect("a valid template"),
        ),
    };
    m.add(bar.with_message(what.to_owned()))
}

/// A spinner with the time spent, for work whose size is unknown.
pub fn spinner(what: &str) -> ProgressBar {
    let Some(m) = bars() else {
        return ProgressBar::hidden();
    };
    let bar = m.add(
        ProgressBar::new_spinner()
            .with_style(
                ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                    .expect("a valid template"),
            )
            .with_message(what.to_owned()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// `reader` counted on a bar named `what`; the bar is hidden when nothing is drawn.
pub fn reader<R: Read>(reader: R, total: Option<u64>, what: &str) -> ProgressBarIter<R> {
    bytes(total, what).wrap_read(reader)
}

/// The log writer: stderr, with the bars suspended while a line is written.
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match bars() {
            Some(m) => m.suspend(|| io::stderr().write(buf)),
            None => io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_only_on_a_terminal_with_text_logs_outside_ci() {
        assert!(should_draw(true, true, None, Some("xterm-256color")));
        assert!(should_draw(true, true, Some(""), None));
        assert!(!should_draw(false, true, None, Some("xterm")), "JSON logs");
        assert!(!should_draw(true, false, None, Some("xterm")), "a pipe");
        assert!(!should_draw(true, true, Some("true"), Some("xterm")), "CI");
        assert!(
            !should_draw(true, true, None, Some("dumb")),
            "a dumb terminal"
        );
    }

    #[test]
    fn hidden_bars_pass_every_byte_through() {
        let data = b"{\"a\":1}\n{\"b\":2}\n".repeat(1000);
        let mut out = Vec::new();
        reader(&data[..], Some(data.len() as u64), "reading")
            .read_to_end(&mut out)
            .expect("read");
        assert_eq!(out, data);
    }
}
