//! `cs-tui status`: every account's usage and reset credits, fetched concurrently.
//!
//! Human output is an aligned table with relative times; `--json` output is stable (fields are
//! only ever added) and documented in README.md. No output, error or log line holds a token.

use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, Utc};
use color_eyre::eyre::Result;
use serde::Serialize;

use super::Env;
use super::accounts::Context;
use super::output::{active_marker, emit, emit_json, relative_time, table, yes_no};
use crate::account_id::AccountId;
use crate::accounts::reset_credits::{ResetCredits, fetch_reset_credits_with};
use crate::accounts::store::unsupported_sign_in_state;
use crate::accounts::tokens::relogin_command;
use crate::accounts::{AccountsFile, Backend, UsageReport, fetch_usage_with, needs_login};
use crate::cli::StatusArgs;
use crate::errors::render_error;
use crate::pace::{Burn, RUNWAY_HORIZON_SECS, Runway, UsageSample, describe_runway, pool_runway};
use crate::proxy::usage_store::{self, StoredSample};
use crate::quota::{RateLimitSnapshot, RateLimitWindow, WindowKind};

/// One window in `status --json`.
#[derive(Serialize)]
struct WindowJson {
    used_percent: f64,
    window_minutes: Option<u32>,
    resets_at: Option<DateTime<Utc>>,
    /// The window named by its length: `5h`, `weekly`, `30d`, …
    label: String,
}

impl From<&RateLimitWindow> for WindowJson {
    fn from(w: &RateLimitWindow) -> Self {
        Self {
            used_percent: w.used_percent,
            window_minutes: w.window_duration_mins,
            resets_at: w.resets_at.and_then(|s| DateTime::from_timestamp(s, 0)),
            label: w.kind().label(),
        }
    }
}

/// One limit family in `status --json` (`codex` first: the account's quota).
#[derive(Serialize)]
struct FamilyJson<'a> {
    limit_id: Option<&'a str>,
    limit_name: Option<&'a str>,
    /// The windows the family has, shortest first.
    windows: Vec<WindowJson>,
    limit_reached_type: Option<&'a str>,
}

impl<'a> From<&'a RateLimitSnapshot> for FamilyJson<'a> {
    fn from(s: &'a RateLimitSnapshot) -> Self {
        Self {
            limit_id: s.limit_id.as_deref(),
            limit_name: s.limit_name.as_deref(),
            windows: s
                .windows_by_length()
                .into_iter()
                .map(WindowJson::from)
                .collect(),
            limit_reached_type: s.rate_limit_reached_type.as_deref(),
        }
    }
}

/// A seat's own spend control (`individual_limit`) in `status --json`.
#[derive(Serialize)]
struct SpendLimitJson<'a> {
    limit: &'a str,
    used: &'a str,
    remaining_percent: f64,
    resets_at: Option<DateTime<Utc>>,
}

#[derive(Serialize)]
struct CreditsJson<'a> {
    has_credits: bool,
    unlimited: bool,
    balance: Option<&'a str>,
}

#[derive(Serialize)]
struct LimitJson<'a> {
    name: &'a str,
    five_hour: Option<WindowJson>,
    weekly: Option<WindowJson>,
    other_windows: Vec<WindowJson>,
}

/// One account in `status --json`.
#[derive(Serialize)]
struct StatusJson<'a> {
    id: &'a AccountId,
    name: &'a str,
    email: Option<&'a str>,
    plan: Option<&'a str>,
    active: bool,
    enabled: bool,
    /// `ok`, `limited`, `needs_login`, `error`, `api_key` or `unsupported_sign_in`.
    state: &'static str,
    error: Option<String>,
    hint: Option<String>,
    five_hour: Option<WindowJson>,
    weekly: Option<WindowJson>,
    other_windows: Vec<WindowJson>,
    credits: Option<CreditsJson<'a>>,
    limit_reached_type: Option<&'a str>,
    additional: Vec<LimitJson<'a>>,
    /// Every limit family by `limit_id`, the account's quota (`codex`) first.
    families: Vec<FamilyJson<'a>>,
    individual_limit: Option<SpendLimitJson<'a>>,
    /// Rate-limit reset credits; `null` when they could not be read.
    reset_credits: Option<&'a ResetCredits>,
    /// When the read failed: the newest reading a session kept of the account
    /// (`<store>/usage.jsonl`), each window's only while it cannot have reset since.
    last_known: Option<LastKnown>,
}

/// An account's newest kept reading, for when its usage cannot be read now.
#[derive(Serialize, Debug, PartialEq)]
struct LastKnown {
    at: DateTime<Utc>,
    five_hour_used_percent: Option<f64>,
    weekly_used_percent: Option<f64>,
}

impl LastKnown {
    /// From the kept samples: a window's number older than the window is dropped (it has
    /// reset since), and with neither left there is nothing to show.
    fn of(stored: &[StoredSample], id: &AccountId, now: DateTime<Utc>) -> Option<Self> {
        let newest = stored
            .iter()
            .filter(|s| &s.account == id)
            .max_by_key(|s| s.at)?;
        let age = now.timestamp() - newest.at;
        let within = |secs: i64, used: Option<f64>| used.filter(|_| (0..secs).contains(&age));
        let known = Self {
            at: DateTime::from_timestamp(newest.at, 0)?,
            five_hour_used_percent: within(5 * 3600, newest.five_hour),
            weekly_used_percent: within(7 * 86_400, newest.weekly),
        };
        (known.five_hour_used_percent.is_some() || known.weekly_used_percent.is_some())
            .then_some(known)
    }

    /// "last known 12m ago: 5h 46%, weekly 27%".
    fn describe(&self, now: DateTime<Utc>) -> String {
        let windows: Vec<String> = [
            ("5h", self.five_hour_used_percent),
            ("weekly", self.weekly_used_percent),
        ]
        .into_iter()
        .filter_map(|(label, used)| Some(format!("{label} {:.0}%", used?)))
        .collect();
        format!(
            "last known {}: {}",
            relative_time(self.at, now),
            windows.join(", ")
        )
    }
}

#[derive(Serialize)]
struct StatusListJson<'a> {
    fetched_at: DateTime<Utc>,
    accounts: Vec<StatusJson<'a>>,
    /// How long the pool lasts at the current pace; `null` with no accounts.
    forecast: Option<ForecastJson>,
}

/// The pool's runway in `status --json`: from every usable account's numbers just read and
/// the burn rate of the usage samples sessions kept (`<store>/usage.jsonl`).
#[derive(Serialize)]
struct ForecastJson {
    /// `idle` (no burn measured: `basis` says why), `keeps_up` (no account runs dry within `horizon`),
    /// `lasts_until` (dry from `dry_from`, no reset known after), `dry_gap` (dry from
    /// `dry_from` until `dry_until`, when `then_account` resets).
    state: &'static str,
    dry_from: Option<DateTime<Utc>>,
    dry_until: Option<DateTime<Utc>>,
    then_account: Option<String>,
    horizon: DateTime<Utc>,
    /// What the forecast stands on: `measured` (a burn measured on the samples),
    /// `too_few_samples` (`idle`: the samples do not yet span enough time to measure the burn
    /// of every window), `no_burn` (`idle`: nothing rose for half an hour).
    basis: &'static str,
    /// The pool's burn of the 5-hour and weekly windows, percentage points an hour (`null`:
    /// too few samples to tell).
    five_hour_burn_per_hour: Option<f64>,
    weekly_burn_per_hour: Option<f64>,
    /// How many stored samples the rates were measured on.
    samples: usize,
    /// The panel's line: "pool dry 13:10–14:02, then alice resets".
    text: String,
}

/// The forecast from the accounts just read (`file`'s order, `outcomes` beside them) and the
/// stored samples, at `now`.
fn forecast_json(
    file: &AccountsFile,
    outcomes: &[Outcome],
    stored: Vec<StoredSample>,
    now: DateTime<Utc>,
) -> ForecastJson {
    let unix = now.timestamp();
    let mut usable: Vec<(&str, &AccountId, &RateLimitSnapshot)> = file
        .accounts
        .iter()
        .zip(outcomes)
        .filter(|(account, _)| account.enabled)
        .filter_map(|(account, outcome)| match outcome {
            Outcome::Usage(report) if report.snapshot.workspace_limit().is_none() => {
                Some((account.name.as_str(), &account.id, &report.snapshot))
            }
            _ => None,
        })
        .collect();
    usable.sort_by_key(|(_, id, _)| file.active.as_ref() != Some(*id));
    // The numbers just read are the newest sample of each account.
    let samples_used = stored.len();
    let mut samples = stored;
    samples.extend(usable.iter().map(|(_, id, snapshot)| StoredSample {
        at: unix,
        account: (*id).clone(),
        five_hour: snapshot.five_hour().map(|w| w.used_percent),
        weekly: snapshot.weekly().map(|w| w.used_percent),
    }));
    let burn = |kind: WindowKind| {
        let of_account = |id: &AccountId| {
            let samples: Vec<UsageSample> = samples
                .iter()
                .filter(|s| &s.account == id)
                .filter_map(|s| {
                    let used = match kind {
                        WindowKind::FiveHour => s.five_hour,
                        _ => s.weekly,
                    }?;
                    Some(UsageSample {
                        at: s.at,
                        used_percent: used,
                    })
                })
                .collect();
            Burn::measure(&samples, unix)
        };
        let is_active = |id: &AccountId| file.active.as_ref() == Some(id);
        Burn::of_pool(
            usable
                .iter()
                .find(|(_, id, _)| is_active(id))
                .map(|(_, id, _)| of_account(id)),
            usable
                .iter()
                .filter(|(_, id, _)| !is_active(id))
                .map(|(_, id, _)| of_account(id)),
        )
    };
    let (five_hour, weekly) = (burn(WindowKind::FiveHour), burn(WindowKind::Weekly));
    let runway = pool_runway(
        usable.iter().map(|(name, _, snapshot)| (*name, *snapshot)),
        five_hour,
        weekly,
        unix,
    );
    let at = |t: i64| DateTime::from_timestamp(t, 0);
    let local = chrono::Local::now().fixed_offset();
    let clock = |t: i64| match at(t) {
        Some(t) => {
            let t = t.with_timezone(local.offset());
            if t.date_naive() == local.date_naive() {
                t.format("%H:%M").to_string()
            } else {
                t.format("%a %H:%M").to_string()
            }
        }
        None => "?".to_owned(),
    };
    let text = describe_runway(&runway, unix, clock);
    let basis = match runway {
        Runway::TooFewSamples => "too_few_samples",
        Runway::Idle => "no_burn",
        _ => "measured",
    };
    let (state, dry_from, dry_until, then_account) = match runway {
        Runway::TooFewSamples | Runway::Idle => ("idle", None, None, None),
        Runway::KeepsUp { .. } => ("keeps_up", None, None, None),
        Runway::LastsUntil { at: from } => ("lasts_until", at(from), None, None),
        Runway::DryGap { from, until, then } => ("dry_gap", at(from), at(until), Some(then)),
    };
    ForecastJson {
        state,
        dry_from,
        dry_until,
        then_account,
        horizon: at(unix + RUNWAY_HORIZON_SECS).unwrap_or(now),
        basis,
        five_hour_burn_per_hour: five_hour.rate().map(|r| r * 3600.0),
        weekly_burn_per_hour: weekly.rate().map(|r| r * 3600.0),
        samples: samples_used,
        text,
    }
}

/// What to do about an account of a kind this version cannot use.
fn unsupported_hint(name: &str) -> String {
    format!("a newer cs-tui uses it; `cs-tui accounts remove {name}` removes it from this store")
}

/// What `status` found for one account.
enum Outcome {
    Usage(Box<UsageReport>),
    ApiKey,
    /// A sign-in kind a newer cs-tui wrote (the kind): not read, never used.
    Unsupported(String),
    Failed {
        needs_login: bool,
        message: String,
        hint: Option<String>,
    },
}

impl Outcome {
    fn state(&self) -> &'static str {
        match self {
            Outcome::Usage(report) if report.is_exhausted() => "limited",
            Outcome::Usage(_) => "ok",
            Outcome::ApiKey => "api_key",
            Outcome::Unsupported(_) => "unsupported_sign_in",
            Outcome::Failed {
                needs_login: true, ..
            } => "needs_login",
            Outcome::Failed { .. } => "error",
        }
    }
}

fn failed(err: &color_eyre::eyre::Report) -> Outcome {
    let hints = crate::errors::hints(err);
    let rendered = render_error(err);
    let message = rendered
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ")
        .to_owned();
    Outcome::Failed {
        needs_login: needs_login(err).is_some(),
        message,
        hint: hints.into_iter().next(),
    }
}

pub(super) fn run(env: &Env, args: StatusArgs) -> Result<ExitCode> {
    let ctx = Context::new(env)?;
    ctx.first_run_import();
    let file = ctx.store.load()?;
    if file.accounts.is_empty() {
        if args.json {
            emit_json(&StatusListJson {
                fetched_at: Utc::now(),
                accounts: Vec::new(),
                forecast: None,
            })?;
        } else {
            eprintln!(
                "No accounts stored.\nhint: add one with `cs-tui accounts add NAME` or `cs-tui accounts import`"
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let backend = Backend::from_env()?;
    let http = env.http()?;
    let timeout = Duration::from_secs(args.timeout.max(1));
    let fetched: Option<Vec<(Outcome, Option<ResetCredits>)>> = env.until_interrupted(async {
        let fetches = file.accounts.iter().map(|account| {
            let (store, backend) = (&ctx.store, &backend);
            async move {
                if let Some(kind) = account.unsupported_sign_in() {
                    return (Outcome::Unsupported(kind.to_owned()), None);
                }
                if !account.is_chatgpt() {
                    return (Outcome::ApiKey, None);
                }
                let usage = tokio::time::timeout(
                    timeout,
                    fetch_usage_with(store, http, backend, &account.id),
                )
                .await;
                // The reset credits are read after the usage, with the tokens its read may
                // have refreshed (one refresh per account, never two racing); an old backend
                // without the endpoint leaves them unknown and fails nothing.
                let credits = match &usage {
                    Ok(Ok(_)) => match tokio::time::timeout(
                        timeout,
                        fetch_reset_credits_with(store, http, backend, &account.id),
                    )
                    .await
                    {
                        Ok(Ok(credits)) => Some(credits),
                        Ok(Err(err)) => {
                            tracing::info!(account = %account.name, "reset credits: {err:#}");
                            None
                        }
                        Err(_) => None,
                    },
                    _ => None,
                };
                let outcome = match usage {
                    Ok(Ok(report)) => Outcome::Usage(Box::new(report)),
                    Ok(Err(err)) => {
                        tracing::warn!(account = %account.name, "usage: {err:#}");
                        failed(&err)
                    }
                    Err(_) => Outcome::Failed {
                        needs_login: false,
                        message: format!(
                            "no answer within {}s for account {:?}",
                            timeout.as_secs(),
                            account.name
                        ),
                        hint: Some("try again, or raise --timeout".into()),
                    },
                };
                (outcome, credits)
            }
        });
        futures_util::future::join_all(fetches).await
    });
    // A fetch that timed out may have left a refresh under way whose server already rotated
    // the refresh token: its answer must reach the store before the process ends.
    let saved = env.finish_refreshes(&ctx.store);
    let Some(fetched) = fetched else {
        return Ok(ExitCode::from(super::INTERRUPTED));
    };
    let (outcomes, credits): (Vec<Outcome>, Vec<Option<ResetCredits>>) =
        fetched.into_iter().unzip();
    // Reload: refreshes during the fetch may have changed plans and statuses.
    let file = ctx.store.load().unwrap_or(file);
    let any_failed = !saved || outcomes.iter().any(|o| matches!(o, Outcome::Failed { .. }));
    let now = Utc::now();
    let stored = usage_store::load(env.store_dir()?, now.timestamp());
    if args.json {
        let mut json = status_json(&file, &outcomes, &credits, &stored, now);
        json.forecast = Some(forecast_json(&file, &outcomes, stored, now));
        emit_json(&json)?;
    } else {
        let mut text = status_table(&file, &outcomes, &credits, &stored, now);
        let forecast = forecast_json(&file, &outcomes, stored, now);
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&forecast.text);
        text.push('\n');
        emit(&text)?;
    }
    Ok(if any_failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn windows_json(
    snapshot: &RateLimitSnapshot,
) -> (Option<WindowJson>, Option<WindowJson>, Vec<WindowJson>) {
    (
        snapshot.five_hour().map(WindowJson::from),
        snapshot.weekly().map(WindowJson::from),
        snapshot
            .windows()
            .filter(|w| matches!(w.kind(), WindowKind::Other(_)))
            .map(WindowJson::from)
            .collect(),
    )
}

fn status_json<'a>(
    file: &'a AccountsFile,
    outcomes: &'a [Outcome],
    credits: &'a [Option<ResetCredits>],
    stored: &[StoredSample],
    now: DateTime<Utc>,
) -> StatusListJson<'a> {
    let accounts = file
        .accounts
        .iter()
        .zip(outcomes)
        .zip(credits)
        .map(|((account, outcome), reset_credits)| {
            let mut entry = StatusJson {
                id: &account.id,
                name: &account.name,
                email: account.email.as_deref(),
                plan: account.plan.as_deref(),
                active: file.active.as_ref() == Some(&account.id),
                enabled: account.enabled,
                state: outcome.state(),
                error: None,
                hint: None,
                five_hour: None,
                weekly: None,
                other_windows: Vec::new(),
                credits: None,
                limit_reached_type: None,
                additional: Vec::new(),
                families: Vec::new(),
                individual_limit: None,
                reset_credits: reset_credits.as_ref(),
                last_known: None,
            };
            match outcome {
                Outcome::Usage(report) => {
                    let snapshot = &report.snapshot;
                    (entry.five_hour, entry.weekly, entry.other_windows) = windows_json(snapshot);
                    entry.plan = report.plan.as_deref().or(entry.plan);
                    entry.credits = snapshot.credits.as_ref().map(|c| CreditsJson {
                        has_credits: c.has_credits,
                        unlimited: c.unlimited,
                        balance: c.balance.as_deref(),
                    });
                    entry.limit_reached_type = snapshot.rate_limit_reached_type.as_deref();
                    entry.families = std::iter::once(snapshot)
                        .chain(report.additional.iter().map(|(_, s)| s))
                        .map(FamilyJson::from)
                        .collect();
                    entry.individual_limit =
                        snapshot.individual_limit.as_ref().map(|l| SpendLimitJson {
                            limit: &l.limit,
                            used: &l.used,
                            remaining_percent: l.remaining_percent,
                            resets_at: l.resets_at.and_then(|s| DateTime::from_timestamp(s, 0)),
                        });
                    entry.additional = report
                        .additional
                        .iter()
                        .map(|(name, snapshot)| {
                            let (five_hour, weekly, other_windows) = windows_json(snapshot);
                            LimitJson {
                                name,
                                five_hour,
                                weekly,
                                other_windows,
                            }
                        })
                        .collect();
                }
                Outcome::Failed { message, hint, .. } => {
                    entry.error = Some(message.clone());
                    entry.hint = hint.clone();
                    entry.last_known = LastKnown::of(stored, &account.id, now);
                }
                Outcome::ApiKey => {}
                Outcome::Unsupported(kind) => {
                    entry.error = Some(unsupported_sign_in_state(kind));
                    entry.hint = Some(unsupported_hint(&account.name));
                }
            }
            entry
        })
        .collect();
    StatusListJson {
        fetched_at: now,
        accounts,
        forecast: None,
    }
}

fn percent(window: Option<&RateLimitWindow>) -> String {
    window
        .map(|w| format!("{:.0}%", w.used_percent))
        .unwrap_or_else(|| "-".into())
}

fn resets(window: Option<&RateLimitWindow>, now: DateTime<Utc>) -> String {
    window
        .and_then(|w| w.resets_at)
        .and_then(|s| DateTime::from_timestamp(s, 0))
        .map(|t| relative_time(t, now))
        .unwrap_or_else(|| "-".into())
}

/// "2, first expires in 3d", "-" when none or unknown.
fn reset_credits_cell(credits: Option<&ResetCredits>, now: DateTime<Utc>) -> String {
    match credits {
        Some(c) if c.available > 0 => match c.nearest_expires_at {
            Some(at) => format!("{}, first expires {}", c.available, relative_time(at, now)),
            None => c.available.to_string(),
        },
        Some(_) => "0".to_owned(),
        None => "-".to_owned(),
    }
}

fn status_table(
    file: &AccountsFile,
    outcomes: &[Outcome],
    credits: &[Option<ResetCredits>],
    stored: &[StoredSample],
    now: DateTime<Utc>,
) -> String {
    let mut problems = Vec::new();
    let exhausted_with_credit: Vec<&str> = file
        .accounts
        .iter()
        .zip(outcomes)
        .zip(credits)
        .filter(|((_, outcome), credits)| {
            matches!(outcome, Outcome::Usage(r) if r.is_exhausted())
                && credits.as_ref().is_some_and(|c| c.available > 0)
        })
        .map(|((account, _), _)| account.name.as_str())
        .collect();
    let rows = file
        .accounts
        .iter()
        .zip(outcomes)
        .zip(credits)
        .map(|((account, outcome), reset_credits)| {
            let (five, weekly, state) = match outcome {
                Outcome::Usage(report) => {
                    let s = &report.snapshot;
                    let state = if report.is_exhausted() {
                        match s
                            .available_again_at()
                            .and_then(|t| DateTime::from_timestamp(t, 0))
                        {
                            Some(t) => format!("limit reached, back {}", relative_time(t, now)),
                            None => "limit reached".to_owned(),
                        }
                    } else {
                        "ok".to_owned()
                    };
                    (Some(s.five_hour()), Some(s.weekly()), state)
                }
                Outcome::ApiKey => (None, None, "api key (no ChatGPT limits)".to_owned()),
                Outcome::Unsupported(kind) => (None, None, unsupported_sign_in_state(kind)),
                Outcome::Failed {
                    needs_login,
                    message,
                    hint,
                } => {
                    problems.push(format!(
                        "{}: {message}{}{}",
                        account.name,
                        hint.as_deref()
                            .map(|h| format!("\n  hint: {h}"))
                            .unwrap_or_default(),
                        LastKnown::of(stored, &account.id, now)
                            .map(|known| format!("\n  {}", known.describe(now)))
                            .unwrap_or_default()
                    ));
                    let state = if *needs_login {
                        format!("needs login: run `{}`", relogin_command(&account.name))
                    } else {
                        "error (see below)".to_owned()
                    };
                    (None, None, state)
                }
            };
            vec![
                active_marker(file, account),
                account.name.clone(),
                percent(five.flatten()),
                resets(five.flatten(), now),
                percent(weekly.flatten()),
                resets(weekly.flatten(), now),
                // Automatic switching never picks an account it cannot use.
                if account.unsupported_sign_in().is_some() {
                    "-".to_owned()
                } else {
                    yes_no(account.enabled)
                },
                reset_credits_cell(reset_credits.as_ref(), now),
                state,
            ]
        })
        .collect();
    let mut text = table(
        &[
            "",
            "NAME",
            "5H",
            "RESETS",
            "WEEKLY",
            "RESETS",
            "AUTO",
            "RESET CREDITS",
            "STATE",
        ],
        rows,
    );
    // Windows the columns do not hold (a 30-day window), and the limits of particular
    // models (other limit families): one line each under the table.
    let mut extra = Vec::new();
    for (account, outcome) in file.accounts.iter().zip(outcomes) {
        let Outcome::Usage(report) = outcome else {
            continue;
        };
        let describe = |s: &RateLimitSnapshot, only_other: bool| -> String {
            s.windows()
                .filter(|w| !only_other || matches!(w.kind(), WindowKind::Other(_)))
                .map(|w| format!("{} {:.0}%", w.kind().label(), w.used_percent))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let other = describe(&report.snapshot, true);
        if !other.is_empty() {
            extra.push(format!("{}: {other}", account.name));
        }
        if let Some(spend) = &report.snapshot.individual_limit {
            extra.push(format!(
                "{}: spend {} of {}",
                account.name, spend.used, spend.limit
            ));
        }
        for (name, family) in &report.additional {
            extra.push(format!(
                "{} · {name}: {}",
                account.name,
                describe(family, false)
            ));
        }
    }
    if !extra.is_empty() {
        text.push('\n');
        for line in extra {
            text.push_str(&line);
            text.push('\n');
        }
    }
    if let Some(name) = exhausted_with_credit.first() {
        text.push_str(&format!(
            "\n{} exhausted and can be reset with a credit: `cs-tui accounts reset {name}`\n",
            exhausted_with_credit.join(", ")
        ));
    }
    if !problems.is_empty() {
        text.push('\n');
        for problem in problems {
            text.push_str(&problem);
            text.push('\n');
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::{Account, AccountAuth};
    use crate::secret::Secret;

    const NOW: i64 = 1_800_000_000;

    fn file() -> AccountsFile {
        let account = |id: &str, name: &str| {
            Account::new(
                AccountId::from(id),
                name.to_owned(),
                AccountAuth::ChatGpt {
                    id_token: Secret::new("ID"),
                    access_token: Secret::new("ACCESS"),
                    refresh_token: Secret::new("REFRESH"),
                },
            )
        };
        AccountsFile {
            active: Some(AccountId::from("aaaa")),
            accounts: vec![account("aaaa", "alice"), account("bbbb", "bob")],
            ..AccountsFile::default()
        }
    }

    fn read(five_hour: f64, weekly: f64) -> Outcome {
        let window = |used: f64, mins: u32, resets_in: i64| RateLimitWindow {
            used_percent: used,
            window_duration_mins: Some(mins),
            resets_at: Some(NOW + resets_in),
        };
        Outcome::Usage(Box::new(UsageReport {
            snapshot: RateLimitSnapshot {
                primary: Some(window(five_hour, 300, 4 * 3600)),
                secondary: Some(window(weekly, 7 * 1440, 3 * 86_400)),
                ..Default::default()
            },
            additional: Vec::new(),
            plan: Some("plus".into()),
            limit_reached: false,
            fetched_at: DateTime::from_timestamp(NOW, 0).unwrap(),
        }))
    }

    fn sample(account: &str, ago: i64, five_hour: f64, weekly: f64) -> StoredSample {
        StoredSample {
            at: NOW - ago,
            account: AccountId::from(account),
            five_hour: Some(five_hour),
            weekly: Some(weekly),
        }
    }

    fn forecast(stored: Vec<StoredSample>) -> serde_json::Value {
        let outcomes = [read(50.0, 30.0), read(10.0, 20.0)];
        let now = DateTime::from_timestamp(NOW, 0).unwrap();
        serde_json::to_value(forecast_json(&file(), &outcomes, stored, now)).unwrap()
    }

    /// One stored sample 3 minutes old and the read just made: too few to forecast on (it
    /// used to forecast from the active account's average since its window opened).
    #[test]
    fn the_forecast_says_when_the_samples_are_too_few() {
        let json = forecast(vec![sample("aaaa", 180, 48.0, 30.0)]);
        assert_eq!(json["state"], "idle", "{json:#}");
        assert_eq!(json["basis"], "too_few_samples", "{json:#}");
        assert_eq!(json["five_hour_burn_per_hour"], serde_json::Value::Null);
        assert_eq!(json["weekly_burn_per_hour"], serde_json::Value::Null);
        assert_eq!(json["dry_from"], serde_json::Value::Null);
        assert_eq!(json["samples"], 1);
        assert_eq!(json["text"], "pool: no burn measured yet");
        assert!(json["horizon"].is_string(), "{json:#}");
    }

    #[test]
    fn the_forecast_stands_on_a_measured_burn() {
        // alice: 10 points of the 5-hour window in 40 minutes, the weekly one flat.
        let json = forecast(vec![
            sample("aaaa", 2400, 40.0, 30.0),
            sample("bbbb", 2400, 10.0, 20.0),
        ]);
        assert_eq!(json["basis"], "measured", "{json:#}");
        assert_eq!(json["five_hour_burn_per_hour"], 15.0, "{json:#}");
        assert_eq!(json["weekly_burn_per_hour"], 0.0, "{json:#}");
        // alice's 50 % last 200 minutes, bob's 90 % 360 more: past the 4-hour reset, and
        // 15 points an hour never outruns the 5-hour windows of two accounts.
        assert_eq!(json["state"], "keeps_up", "{json:#}");
        // Nothing rose for 40 minutes: no burn.
        let json = forecast(vec![
            sample("aaaa", 2400, 50.0, 30.0),
            sample("bbbb", 2400, 10.0, 20.0),
        ]);
        assert_eq!(json["state"], "idle", "{json:#}");
        assert_eq!(json["basis"], "no_burn", "{json:#}");
        assert_eq!(json["five_hour_burn_per_hour"], 0.0, "{json:#}");
    }

    /// The backend cannot be read: the account's newest kept reading stands in, each window's
    /// only while it cannot have reset since.
    #[test]
    fn a_failed_read_shows_the_last_known_numbers_while_they_can_still_hold() {
        let now = DateTime::from_timestamp(NOW, 0).unwrap();
        let failed = Outcome::Failed {
            needs_login: false,
            message: "the backend answered 500".into(),
            hint: None,
        };
        let outcomes = [failed, read(10.0, 20.0)];
        let credits = [None, None];
        let stored = vec![
            sample("aaaa", 3 * 3600, 30.0, 10.0),
            sample("aaaa", 720, 46.0, 27.0),
            sample("bbbb", 60, 9.0, 19.0),
        ];
        let json =
            serde_json::to_value(status_json(&file(), &outcomes, &credits, &stored, now)).unwrap();
        let alice = &json["accounts"][0];
        assert_eq!(alice["state"], "error");
        assert_eq!(
            alice["last_known"]["five_hour_used_percent"], 46.0,
            "{alice:#}"
        );
        assert_eq!(
            alice["last_known"]["weekly_used_percent"], 27.0,
            "{alice:#}"
        );
        assert_eq!(
            alice["last_known"]["at"],
            serde_json::to_value(DateTime::from_timestamp(NOW - 720, 0).unwrap()).unwrap()
        );
        // A read that worked needs none.
        assert_eq!(json["accounts"][1]["last_known"], serde_json::Value::Null);
        let text = status_table(&file(), &outcomes, &credits, &stored, now);
        assert!(
            text.contains(
                "alice: the backend answered 500\n  last known 12m ago: 5h 46%, weekly 27%"
            ),
            "{text}"
        );

        // Six hours old: the 5-hour window has reset since; the weekly number still holds.
        let old = [sample("aaaa", 6 * 3600, 46.0, 27.0)];
        let known = LastKnown::of(&old, &AccountId::from("aaaa"), now).unwrap();
        assert_eq!(known.five_hour_used_percent, None);
        assert_eq!(known.weekly_used_percent, Some(27.0));
        assert_eq!(known.describe(now), "last known 6h ago: weekly 27%");
        // Older than a week, from the future, or none: nothing to show.
        let stale = [sample("aaaa", 8 * 86_400, 46.0, 27.0)];
        assert_eq!(LastKnown::of(&stale, &AccountId::from("aaaa"), now), None);
        let ahead = [sample("aaaa", -600, 46.0, 27.0)];
        assert_eq!(LastKnown::of(&ahead, &AccountId::from("aaaa"), now), None);
        assert_eq!(LastKnown::of(&[], &AccountId::from("aaaa"), now), None);
    }
}
