//! Owns how a request's progress is shown on stderr: plain lines, or a live spinner on a terminal.
//! May not touch: the server's API, stdout, or the command line.

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Failure;

/// How progress is shown: a live display on a terminal, plain lines otherwise.
pub(super) struct Progress {
    live: bool,
    started: Instant,
    step: String,
    step_started: Instant,
    spinner: usize,
}

const SPINNER: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

fn seconds(d: Duration) -> String {
    crate::status::human_span(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Progress {
    pub(super) fn new(live: bool) -> Progress {
        Progress {
            live,
            started: Instant::now(),
            step: String::new(),
            step_started: Instant::now(),
            spinner: 0,
        }
    }

    pub(super) fn event(&mut self, event: &Value) {
        let step = event["step"].as_str().unwrap_or_default().to_string();
        let message = event["message"].as_str().unwrap_or_default();
        let mut err = std::io::stderr().lock();
        if !self.live {
            let _ = writeln!(err, "[{step}] {message}");
            return;
        }
        let is_step = step
            .parse::<crate::domain::Step>()
            .is_ok_and(|s| crate::domain::Step::PIPELINE.contains(&s));
        if is_step && step != self.step {
            if !self.step.is_empty() {
                let _ = writeln!(
                    err,
                    "\r\x1b[2K✔ {:<8} {}",
                    self.step,
                    seconds(self.step_started.elapsed())
                );
            }
            self.step = step.clone();
            self.step_started = Instant::now();
        }
        if step == "waiting" || message.starts_with('│') || message.starts_with("$ ") {
            // Queue position and command output: one line above the spinner.
            if step == "waiting" {
                let _ = writeln!(err, "\r\x1b[2K  {message}");
            }
        }
        self.tick();
    }

    fn tick(&mut self) {
        if !self.live || self.step.is_empty() {
            return;
        }
        self.spinner = (self.spinner + 1) % SPINNER.len();
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2K{} {:<8} {}",
            SPINNER[self.spinner],
            self.step,
            seconds(self.step_started.elapsed())
        );
        let _ = err.flush();
    }

    pub(super) fn finish(&mut self, job: &Value) {
        let mut err = std::io::stderr().lock();
        let ok = job["conclusion"] == "success";
        if self.live {
            let mark = if ok { "✔" } else { "✘" };
            let _ = writeln!(
                err,
                "\r\x1b[2K{mark} {:<8} {}",
                self.step,
                seconds(self.step_started.elapsed())
            );
        }
        let _ = writeln!(
            err,
            "{} request #{} {} in {}",
            if ok { "✔" } else { "✘" },
            job["id"],
            match job["state"].as_str().unwrap_or_default() {
                "succeeded" => "succeeded".to_string(),
                other => format!(
                    "{other}: {}",
                    job["error"].as_str().unwrap_or("no reason given")
                ),
            },
            seconds(self.started.elapsed())
        );
    }
}

/// Await `follow`, keeping the spinner turning while nothing happens.
pub(super) async fn follow_with_spinner(
    follow: impl std::future::Future<Output = Result<Value, Failure>>,
    progress: &std::cell::RefCell<Progress>,
    live: bool,
) -> Result<Value, Failure> {
    if !live {
        return follow.await;
    }
    let mut follow = std::pin::pin!(follow);
    let mut ticker = tokio::time::interval(Duration::from_millis(120));
    loop {
        tokio::select! {
            ended = &mut follow => return ended,
            _ = ticker.tick() => progress.borrow_mut().tick(),
        }
    }
}
