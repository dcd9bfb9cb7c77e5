//! `smoke`: a short run of every scenario (group chat too when a MUC service is given)
//! that fails on any error or lost message.
//! It checks that the tool and the server work, not how fast.

use std::time::Duration;

use anyhow::{bail, Result};

use super::{
    muc,
    sessions::{self, SessionsArgs},
    throughput::{self, ThroughputArgs, To},
    Ctx,
};
use crate::report::Report;

/// Runs the scenarios (about `seconds` in all, plus a few seconds of group chat when
/// `muc_service` is given); fails if any of them went wrong.
pub async fn smoke(
    ctx: &Ctx,
    users: usize,
    seconds: u64,
    muc_service: Option<String>,
) -> Result<()> {
    let users = users.max(4) & !1;
    let sending = Duration::from_secs(seconds.saturating_sub(10).max(4));
    let mut reports: Vec<Report> = Vec::new();
    let mut failures_early = Vec::new();
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
    // Both addressing patterns: bare JIDs at window 1, full JIDs at window 10.
    for (window, duration, to) in [
        (1, sending / 4, To::Bare),
        (10, sending - sending / 4, To::Full),
    ] {
        reports.push(
            throughput::throughput(
                ctx,
                ThroughputArgs {
                    users,
                    window,
                    duration,
                    first_user: 1,
                    to,
                },
            )
            .await?,
        );
    }
    if let Some(service) = muc_service {
        let args = muc::MucArgs {
            users: users.min(10),
            senders: 2,
            window: 5,
            duration: Duration::from_secs(2),
            service,
            room: "smoke".into(),
            first_user: 1,
        };
        let r = muc::muc(ctx, &args).await?;
        if r.get("room_destroyed").is_some_and(|v| v == 0.0) {
            failures_early.push(format!("room not destroyed in {}", r.json()));
        }
        reports.push(r);
    }
    let mut failures = failures_early;
    for r in &reports {
        r.emit();
        for key in ["errors", "lost", "out_of_order"] {
            if r.get(key).is_some_and(|v| v > 0.0) {
                failures.push(format!("{key} > 0 in {}", r.json()));
            }
        }
        let none = |key| r.get(key).is_some_and(|v| v == 0.0);
        if none("ok") || none("received") || none("deliveries") {
            failures.push(format!("nothing worked in {}", r.json()));
        }
    }
    if !failures.is_empty() {
        bail!("smoke run failed:\n{}", failures.join("\n"));
    }
    eprintln!("smoke: ok ({} scenarios, no error, no loss)", reports.len());
    Ok(())
}
