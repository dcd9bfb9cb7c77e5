//! `smoke`: a short run of every scenario that fails on any error or lost message.
//! It checks that the tool and the server work, not how fast.

use std::time::Duration;

use anyhow::{bail, Result};

use super::{
    sessions::{self, SessionsArgs},
    throughput::{self, ThroughputArgs},
    Ctx,
};
use crate::report::Report;

/// Runs the scenarios (about `seconds` in all); fails if any of them went wrong.
pub async fn smoke(ctx: &Ctx, users: usize, seconds: u64) -> Result<()> {
    let users = users.max(4) & !1;
    let sending = Duration::from_secs(seconds.saturating_sub(10).max(4));
    let mut reports: Vec<Report> = Vec::new();
    reports.push(sessions::latency(ctx, 10, users, 1).await?);
    reports.push(
        sessions::sessions(
            ctx,
            SessionsArgs {
                count: users,
                concurrency: 8,
                first_user: 1,
                settle: Duration::from_millis(500),
                hold: Duration::from_millis(500),
            },
        )
        .await?,
    );
    for (window, duration) in [(1, sending / 4), (10, sending - sending / 4)] {
        reports.push(
            throughput::throughput(
                ctx,
                ThroughputArgs {
                    users,
                    window,
                    duration,
                    first_user: 1,
                },
            )
            .await?,
        );
    }
    let mut failures = Vec::new();
    for r in &reports {
        r.emit();
        for key in ["errors", "lost", "out_of_order"] {
            if r.get(key).is_some_and(|v| v > 0.0) {
                failures.push(format!("{key} > 0 in {}", r.json()));
            }
        }
        if r.get("ok").is_some_and(|v| v == 0.0) || r.get("received").is_some_and(|v| v == 0.0) {
            failures.push(format!("nothing worked in {}", r.json()));
        }
    }
    if !failures.is_empty() {
        bail!("smoke run failed:\n{}", failures.join("\n"));
    }
    eprintln!("smoke: ok ({} scenarios, no error, no loss)", reports.len());
    Ok(())
}
