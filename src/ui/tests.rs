//! Snapshots of the panel in its states, rendered with a fixed "now" so they are stable.

use chrono::{DateTime, FixedOffset, TimeZone, Utc};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

use super::*;
use crate::account_id::AccountId;
use crate::config::PanelConfig;
use crate::proxy::events::{AccountRef, ConnectionState, ProxyEvent, SwitchReason};
use crate::pty::queries::OuterColors;
use crate::pty::screen::PaneScreen;
use crate::quota::{Credits, RateLimitSnapshot, RateLimitWindow, SpendLimit, WindowKind};
use crate::state::dashboard::{AccountView, SessionMode, StoredState};

/// 2026-05-01 12:07:00 UTC, a Friday.
const NOW: i64 = 1_777_637_220;

fn now() -> DateTime<FixedOffset> {
    FixedOffset::east_opt(0)
        .unwrap()
        .timestamp_opt(NOW, 0)
        .unwrap()
}

fn at(offset_secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(NOW + offset_secs, 0).unwrap()
}

fn ctx() -> RenderContext<'static> {
    RenderContext {
        now: now(),
        prefix: "Ctrl+]",
    }
}

fn account(id: &str) -> AccountRef {
    AccountRef {
        id: AccountId::from(id),
        name: id.to_owned(),
    }
}

/// A snapshot with the 5-hour window `used` % full resetting in `five_resets_in` seconds, and
/// the weekly window `weekly` % full resetting in 3 days.
fn snapshot(used: f64, five_resets_in: i64, weekly: f64) -> RateLimitSnapshot {
    RateLimitSnapshot {
        primary: Some(RateLimitWindow {
            used_percent: used,
            window_duration_mins: Some(300),
            resets_at: Some(NOW + five_resets_in),
        }),
        secondary: Some(RateLimitWindow {
            used_percent: weekly,
            window_duration_mins: Some(10_080),
            resets_at: Some(NOW + 3 * 86_400 + 4 * 3600),
        }),
        plan_type: Some("plus".into()),
        ..Default::default()
    }
}

fn stored() -> Vec<AccountView> {
    ["alice", "bob", "carol"]
        .into_iter()
        .map(|name| AccountView {
            email: Some(format!("{name}@example.com")),
            plan: Some("plus".into()),
            ..AccountView::new(name, name)
        })
        .collect()
}

fn update(d: &mut Dashboard, id: &str, snap: RateLimitSnapshot, when: i64) {
    update_families(d, id, snap, Vec::new(), when);
}

fn update_families(
    d: &mut Dashboard,
    id: &str,
    snap: RateLimitSnapshot,
    families: Vec<RateLimitSnapshot>,
    when: i64,
) {
    d.apply(&ProxyEvent::RateLimitsUpdated {
        account: account(id),
        snapshot: snap,
        families,
        at: at(when),
    });
}

fn started(accounts: Vec<AccountView>) -> Dashboard {
    let mut d = Dashboard::new(SessionMode::Proxy, accounts);
    d.apply(&ProxyEvent::Connection {
        state: ConnectionState::Ready { clients: 1 },
        at: at(-3600),
    });
    d.apply(&ProxyEvent::ActiveAccount {
        account: account("alice"),
        at: at(-3600),
    });
    d
}

fn render_panel_only(d: &Dashboard, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal
        .draw(|f| panel::render_panel(d, &ctx(), f.area(), f.buffer_mut()))
        .unwrap();
    terminal.backend().to_string()
}

fn render_app(d: &Dashboard, width: u16, height: u16, overlay: Option<&Overlay>) -> String {
    let config = PanelConfig::default();
    let area = Rect::new(0, 0, width, height);
    let app_layout = layout(area, &config, true);
    let mut pane = PaneScreen::new(
        app_layout.pane.height,
        app_layout.pane.width,
        0,
        OuterColors::default(),
    );
    pane.process(
        b"\x1b[1m>_ OpenAI Codex\x1b[0m (v0.169.0)\r\n\r\n\xe2\x80\xba Ask Codex to do anything",
    );
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal
        .draw(|f| {
            draw(
                f,
                &View {
                    screen: pane.screen(),
                    dashboard: d,
                    layout: app_layout,
                    overlay,
                    prefix_pending: false,
                    ctx: ctx(),
                },
                &mut PanelCache::default(),
            )
        })
        .unwrap();
    terminal.backend().to_string()
}

#[test]
fn panel_fresh_session() {
    let mut d = Dashboard::new(SessionMode::Proxy, stored());
    d.apply(&ProxyEvent::ActiveAccount {
        account: account("alice"),
        at: at(0),
    });
    insta::assert_snapshot!(render_panel_only(&d, 44, 30));
}

#[test]
fn panel_burning() {
    let mut d = started(stored());
    // 30 minutes of work: 5-hour window from 20 % to 38 %, reset in 2h 13m.
    for (i, used) in [20.0, 24.0, 29.0, 33.0, 38.0].into_iter().enumerate() {
        let when = -1800 + i as i64 * 450;
        update(
            &mut d,
            "alice",
            snapshot(used, 2 * 3600 + 13 * 60 - when, 31.0),
            when,
        );
    }
    update(&mut d, "bob", snapshot(3.0, 4 * 3600, 9.0), -600);
    let mut carol = snapshot(12.0, 3600, 50.0);
    carol.credits = Some(Credits {
        has_credits: true,
        unlimited: false,
        balance: Some("12.50".into()),
    });
    update(&mut d, "carol", carol, -600);
    d.apply(&ProxyEvent::TurnsRunning {
        running: 1,
        title_turns: 0,
        at: at(0),
    });
    insta::assert_snapshot!(render_panel_only(&d, 44, 40));
}

#[test]
fn panel_near_limit() {
    let mut d = started(stored());
    for (i, used) in [80.0, 86.0, 91.0, 96.0].into_iter().enumerate() {
        let when = -900 + i as i64 * 300;
        update(&mut d, "alice", snapshot(used, 40 * 60 - when, 70.0), when);
    }
    let mut alice = snapshot(96.0, 40 * 60, 70.0);
    alice.credits = Some(Credits {
        has_credits: true,
        unlimited: false,
        balance: Some("3.10".into()),
    });
    update(&mut d, "alice", alice, 0);
    update(&mut d, "bob", snapshot(15.0, 4 * 3600, 22.0), -300);
    d.apply(&ProxyEvent::SwitchDeferred {
        to: Some(account("bob")),
        reason: SwitchReason::SoftThreshold {
            window: "5h".into(),
            used_percent: 96.0,
            threshold: 95.0,
        },
        at: at(0),
    });
    insta::assert_snapshot!(render_panel_only(&d, 44, 40));
}

#[test]
fn panel_switched() {
    let mut d = started(stored());
    update(&mut d, "alice", snapshot(100.0, 47 * 60, 64.0), -120);
    d.apply(&ProxyEvent::UsageLimitHit {
        account: account("alice"),
        session: None,
        at: at(-120),
    });
    d.apply(&ProxyEvent::SwitchDone {
        from: Some(account("alice")),
        to: account("bob"),
        reason: SwitchReason::UsageLimit,
        elapsed_ms: 90,
        at: at(-118),
    });
    // The hidden re-run's notice is longer than the panel is wide: it wraps.
    d.apply(&ProxyEvent::Notice {
        message: "limit hit on alice — continued on bob, 0.3 s".into(),
        at: at(-118),
    });
    update(&mut d, "bob", snapshot(4.0, 4 * 3600 + 50 * 60, 12.0), -60);
    update(&mut d, "bob", snapshot(6.0, 4 * 3600 + 50 * 60, 12.0), 0);
    d.accounts[2].stored = StoredState::NeedsLogin;
    d.apply(&ProxyEvent::SwitchFailed {
        from: Some(account("bob")),
        to: account("carol"),
        reason: SwitchReason::Manual,
        error: "refresh token expired".into(),
        at: at(-30),
    });
    insta::assert_snapshot!(render_panel_only(&d, 44, 40));
}

/// A Spark family at 100 % under an active account whose quota is at 42 %: the gauges keep
/// the quota's numbers, the family has its own row, nobody reads "exhausted".
#[test]
fn panel_model_family_apart_from_the_quota() {
    let mut d = started(stored());
    let mut spark = snapshot(100.0, 3 * 3600, 3.0);
    spark.limit_id = Some("codex_bengalfox".into());
    spark.limit_name = Some("GPT-5.3-Codex-Spark".into());
    update_families(
        &mut d,
        "alice",
        snapshot(42.0, 2 * 3600, 20.0),
        vec![spark],
        0,
    );
    update(&mut d, "bob", snapshot(10.0, 4 * 3600, 9.0), -60);
    let text = render_panel_only(&d, 44, 34);
    assert!(text.contains(" 42%"), "{text}");
    assert!(!text.contains("exhausted"), "{text}");
    insta::assert_snapshot!(text);
}

/// A weekly-only plan has no 5-hour row anywhere, a 30-day workspace plan shows its window
/// by its length; an update that drops the 5-hour window drops the row.
#[test]
fn panel_weekly_only_and_monthly_windows() {
    let mut d = started(stored());
    update(&mut d, "alice", snapshot(30.0, 2 * 3600, 60.0), -600);
    let weekly_only = RateLimitSnapshot {
        primary: Some(RateLimitWindow {
            used_percent: 61.0,
            window_duration_mins: Some(10_080),
            resets_at: Some(NOW + 2 * 86_400),
        }),
        plan_type: Some("plus".into()),
        ..Default::default()
    };
    update(&mut d, "alice", weekly_only, 0);
    let monthly = RateLimitSnapshot {
        primary: Some(RateLimitWindow {
            used_percent: 12.0,
            window_duration_mins: Some(43_200),
            resets_at: Some(NOW + 20 * 86_400),
        }),
        ..Default::default()
    };
    update(&mut d, "bob", monthly, -60);
    let text = render_panel_only(&d, 44, 34);
    assert!(
        !text.contains("5-hour") && !text.contains("no data"),
        "{text}"
    );
    assert!(text.contains("30d"), "{text}");
    insta::assert_snapshot!(text);
}

/// A workspace limit says it is shared by every seat; a seat's own spend control shows.
#[test]
fn panel_workspace_limit_and_spend_control() {
    let mut d = started(stored());
    let mut alice = snapshot(40.0, 2 * 3600, 30.0);
    alice.rate_limit_reached_type = Some("workspace_member_usage_limit_reached".into());
    alice.individual_limit = Some(SpendLimit {
        limit: "50.00".into(),
        used: "12.50".into(),
        remaining_percent: 75.0,
        resets_at: Some(NOW + 5 * 86_400),
    });
    update(&mut d, "alice", alice.clone(), 0);
    update(&mut d, "bob", alice, 0);
    d.apply(&ProxyEvent::Notice {
        message: "alice hit its workspace's limit, which every seat shares: not switching to bob"
            .into(),
        at: at(0),
    });
    let text = render_panel_only(&d, 44, 44);
    assert!(text.contains("workspace limit"), "{text}");
    assert!(text.contains("12.50 of 50.00"), "{text}");
    insta::assert_snapshot!(text);
}

#[test]
fn panel_all_exhausted() {
    let mut d = started(stored());
    update(&mut d, "alice", snapshot(100.0, 25 * 60, 64.0), -60);
    update(&mut d, "bob", snapshot(100.0, 2 * 3600, 80.0), -60);
    update(&mut d, "carol", snapshot(40.0, 3 * 3600, 100.0), -60);
    d.apply(&ProxyEvent::NoAccountAvailable {
        reason: SwitchReason::UsageLimit,
        earliest_reset: Some(at(25 * 60)),
        at: at(-30),
    });
    insta::assert_snapshot!(render_panel_only(&d, 44, 36));
}

fn credits(d: &mut Dashboard, id: &str, available: u32, expires_in: Option<i64>) {
    d.apply(&ProxyEvent::ResetCredits {
        account: account(id),
        credits: crate::accounts::reset_credits::ResetCredits {
            available,
            nearest_expires_at: expires_in.map(at),
        },
        at: at(-60),
    });
}

#[test]
fn panel_all_exhausted_with_a_reset_credit() {
    let mut d = started(stored());
    update(&mut d, "alice", snapshot(100.0, 25 * 60, 64.0), -60);
    update(&mut d, "bob", snapshot(100.0, 2 * 3600, 80.0), -60);
    update(&mut d, "carol", snapshot(40.0, 3 * 3600, 100.0), -60);
    credits(&mut d, "bob", 2, Some(3 * 86_400 + 3600));
    credits(&mut d, "carol", 1, Some(20 * 86_400));
    credits(&mut d, "alice", 0, None);
    insta::assert_snapshot!(render_panel_only(&d, 44, 40));
}

#[test]
fn the_account_to_reset_is_named_only_when_every_account_is_exhausted() {
    let mut d = started(stored());
    update(&mut d, "alice", snapshot(100.0, 25 * 60, 64.0), -60);
    update(&mut d, "bob", snapshot(100.0, 2 * 3600, 80.0), -60);
    update(&mut d, "carol", snapshot(40.0, 3 * 3600, 20.0), -60);
    credits(&mut d, "bob", 1, Some(86_400));
    credits(&mut d, "carol", 1, Some(3600));
    // carol has room: no reset is worth it.
    assert_eq!(d.resettable_when_all_exhausted(), None);
    update(&mut d, "carol", snapshot(40.0, 3 * 3600, 100.0), -30);
    // carol's credit expires first.
    assert_eq!(
        d.resettable_when_all_exhausted().map(|a| a.name.as_str()),
        Some("carol")
    );
    // The active account, when it has one: no switch needed after the reset.
    credits(&mut d, "alice", 1, Some(10 * 86_400));
    assert_eq!(d.active.as_deref(), Some("alice"));
    assert_eq!(
        d.resettable_when_all_exhausted().map(|a| a.name.as_str()),
        Some("alice")
    );
    // No credit anywhere: nothing to say.
    for id in ["alice", "bob", "carol"] {
        credits(&mut d, id, 0, None);
    }
    assert_eq!(d.resettable_when_all_exhausted(), None);
    let panel = render_panel_only(&d, 44, 40);
    assert!(!panel.contains("reset credit"), "{panel}");
}

#[test]
fn narrow_terminal_collapses_to_a_status_bar() {
    let mut d = started(stored());
    update(&mut d, "alice", snapshot(42.0, 2 * 3600 + 13 * 60, 18.0), 0);
    insta::assert_snapshot!(render_app(&d, 90, 8, None));
}

#[test]
fn wide_terminal_shows_pane_and_panel() {
    let mut d = started(stored());
    update(&mut d, "alice", snapshot(42.0, 2 * 3600 + 13 * 60, 18.0), 0);
    insta::assert_snapshot!(render_app(&d, 130, 24, None));
}

#[test]
fn no_proxy_mode_says_so() {
    let d = Dashboard::new(SessionMode::NoProxy, Vec::new());
    insta::assert_snapshot!(render_panel_only(&d, 44, 16));
}

#[test]
fn overlays() {
    let mut d = started(stored());
    update(&mut d, "bob", snapshot(100.0, 2 * 3600, 80.0), -60);
    insta::assert_snapshot!("help", render_app(&d, 90, 20, Some(&Overlay::Help)));
    insta::assert_snapshot!("quit", render_app(&d, 90, 12, Some(&Overlay::ConfirmQuit)));
    insta::assert_snapshot!(
        "picker",
        render_app(&d, 90, 12, Some(&Overlay::Picker { selected: 1 }))
    );
}

#[test]
fn layout_puts_the_panel_on_the_chosen_side_or_collapses_it() {
    let mut config = PanelConfig::default();
    let wide = Rect::new(0, 0, 160, 48);
    let l = layout(wide, &config, true);
    assert_eq!(l.pane, Rect::new(0, 0, 116, 48));
    assert_eq!(l.panel, Some(Rect::new(116, 0, 44, 48)));
    config.side = crate::config::PanelSide::Left;
    let l = layout(wide, &config, true);
    assert_eq!(l.pane, Rect::new(44, 0, 116, 48));
    assert_eq!(l.panel, Some(Rect::new(0, 0, 44, 48)));
    let hidden = layout(wide, &config, false);
    assert_eq!(hidden.pane, Rect::new(0, 0, 160, 47));
    assert_eq!(hidden.status, Some(Rect::new(0, 47, 160, 1)));
    let narrow = layout(Rect::new(0, 0, 100, 30), &config, true);
    assert_eq!(narrow.panel, None);
    assert_eq!(narrow.pane, Rect::new(0, 0, 100, 29));
    // Too narrow: the panel can be shown over the pane on its side, above the status bar.
    assert_eq!(narrow.drawer, Some(Rect::new(0, 0, 44, 29)));
    config.side = crate::config::PanelSide::Right;
    let narrow = layout(Rect::new(0, 0, 100, 30), &config, true);
    assert_eq!(narrow.drawer, Some(Rect::new(56, 0, 44, 29)));
    let tiny = layout(Rect::new(0, 0, 30, 10), &config, true);
    assert_eq!(tiny.drawer, Some(Rect::new(0, 0, 30, 9)));
    // Hidden by choice in a wide terminal: no drawer (the hotkey shows the panel beside).
    assert_eq!(layout(wide, &config, false).drawer, None);
    assert_eq!(layout(wide, &config, true).drawer, None);
    assert_eq!(layout(Rect::new(0, 0, 100, 1), &config, true).drawer, None);
}

#[test]
fn sparkline_shows_what_is_left() {
    assert_eq!(panel::sparkline(&[0.0, 50.0, 100.0], 10), "█▅▁");
    assert_eq!(panel::sparkline(&[0.0, 10.0, 20.0, 30.0], 2), "▇▆");
}

#[test]
fn the_status_bar_shows_whichever_came_last_of_notices_and_switches() {
    let text = |d: &Dashboard| {
        crate::ui::panel::status_line(d, &ctx())
            .spans
            .iter()
            .map(|s| s.content.as_ref())
            .collect::<String>()
    };
    let mut d = started(stored());
    d.apply(&ProxyEvent::Notice {
        message: "switching to bob".into(),
        at: at(-10),
    });
    assert!(text(&d).contains("switching to bob"), "{}", text(&d));
    d.apply(&ProxyEvent::SwitchDone {
        from: Some(account("alice")),
        to: account("bob"),
        reason: SwitchReason::Manual,
        elapsed_ms: 80,
        at: at(-9),
    });
    assert!(text(&d).contains("alice → bob"), "{}", text(&d));
    assert!(!text(&d).contains("switching"), "{}", text(&d));
    d.apply(&ProxyEvent::Notice {
        message: "refreshing every account's usage".into(),
        at: at(-5),
    });
    assert!(text(&d).contains("refreshing"), "{}", text(&d));
}

/// A held turn shows one line while it waits (the count, not a line per turn), gone once the
/// held turns went on.
#[test]
fn held_turns_show_one_notice_while_they_wait() {
    let text = |d: &Dashboard| {
        crate::ui::panel::status_line(d, &ctx())
            .spans
            .iter()
            .map(|s| s.content.as_ref())
            .collect::<String>()
    };
    let held_notices = |d: &Dashboard| {
        d.notices
            .iter()
            .filter(|n| matches!(n, crate::state::dashboard::Notice::TurnsHeld { .. }))
            .count()
    };
    let mut d = started(stored());
    d.apply(&ProxyEvent::TurnsHeld {
        held: 1,
        at: at(-3),
    });
    assert!(
        text(&d).contains("⏸ turn held: switching accounts"),
        "{}",
        text(&d)
    );
    d.apply(&ProxyEvent::TurnsHeld {
        held: 2,
        at: at(-2),
    });
    assert!(text(&d).contains("⏸ 2 turns held"), "{}", text(&d));
    assert_eq!(held_notices(&d), 1);
    d.apply(&ProxyEvent::TurnsHeld {
        held: 0,
        at: at(-1),
    });
    assert_eq!(held_notices(&d), 0);
    assert!(!text(&d).contains("held"), "{}", text(&d));
}

#[test]
fn the_panel_is_laid_out_again_only_when_what_it_shows_changed() {
    let mut d = started(stored());
    update(&mut d, "alice", snapshot(42.0, 2 * 3600 + 13 * 60, 18.0), 0);
    let area = Rect::new(0, 0, 44, 30);
    let render = |d: &Dashboard, cache: &mut PanelCache, ctx: &RenderContext<'_>| {
        let mut buf = ratatui::buffer::Buffer::empty(Rect::new(0, 0, 50, 30));
        cache.render(d, ctx, area, &mut buf);
        buf
    };
    let fresh = |d: &Dashboard, ctx: &RenderContext<'_>| {
        let mut buf = ratatui::buffer::Buffer::empty(Rect::new(0, 0, 50, 30));
        panel::render_panel(d, ctx, area, &mut buf);
        buf
    };
    let mut cache = PanelCache::default();
    assert_eq!(render(&d, &mut cache, &ctx()), fresh(&d, &ctx()));
    // Drawn again from the memo: the same cells.
    assert_eq!(render(&d, &mut cache, &ctx()), fresh(&d, &ctx()));
    // A change to the dashboard, and a minute passing, show at once.
    update(&mut d, "alice", snapshot(57.0, 2 * 3600 + 13 * 60, 18.0), 0);
    assert_eq!(render(&d, &mut cache, &ctx()), fresh(&d, &ctx()));
    let later = RenderContext {
        now: now() + chrono::Duration::minutes(7),
        prefix: "Ctrl+]",
    };
    assert_eq!(render(&d, &mut cache, &later), fresh(&d, &later));
    assert_ne!(fresh(&d, &later), fresh(&d, &ctx()), "the countdown moved");
}

#[test]
fn a_layout_made_for_a_bigger_terminal_draws_what_fits() {
    // The terminal shrank and the frame is drawn before the resize event is handled: the
    // layout still puts the panel beyond the buffer's right edge.
    let mut d = started(stored());
    update(&mut d, "alice", snapshot(42.0, 2 * 3600, 18.0), 0);
    let stale = layout(Rect::new(0, 0, 160, 48), &PanelConfig::default(), true);
    let pane = PaneScreen::new(
        stale.pane.height,
        stale.pane.width,
        0,
        OuterColors::default(),
    );
    let mut terminal = Terminal::new(TestBackend::new(100, 30)).unwrap();
    terminal
        .draw(|f| {
            draw(
                f,
                &View {
                    screen: pane.screen(),
                    dashboard: &d,
                    layout: stale,
                    overlay: None,
                    prefix_pending: false,
                    ctx: ctx(),
                },
                &mut PanelCache::default(),
            )
        })
        .unwrap();
}

fn pool(d: &mut Dashboard, shares: &[(&str, usize)]) {
    use crate::proxy::events::PoolShare;
    d.apply(&ProxyEvent::PoolChanged {
        sessions: shares.iter().map(|(_, n)| n).sum(),
        by_account: shares
            .iter()
            .map(|(id, n)| PoolShare {
                account: account(id),
                sessions: *n,
            })
            .collect(),
        at: at(0),
    });
}

#[test]
fn panel_in_a_pool_of_sessions() {
    let mut d = started(stored());
    update(&mut d, "alice", snapshot(42.0, 2 * 3600 + 13 * 60, 18.0), 0);
    update(&mut d, "bob", snapshot(3.0, 4 * 3600, 9.0), 0);
    pool(&mut d, &[("alice", 2), ("bob", 1)]);
    let text = render_panel_only(&d, 44, 24);
    assert!(text.contains("3 sessions: alice ×2, bob ×1"), "{text}");
    assert!(text.contains("● alice ×2"), "{text}");
    assert!(text.contains("  bob ×1"), "{text}");
    assert!(!text.contains("carol ×"), "{text}");
    insta::assert_snapshot!(text);
}

#[test]
fn a_session_alone_shows_no_pool() {
    let mut d = started(stored());
    pool(&mut d, &[("alice", 1)]);
    let text = render_panel_only(&d, 44, 24);
    assert!(!text.contains("session"), "{text}");
    assert!(!text.contains('×'), "{text}");
    let bar = render_app(&d, 90, 8, None);
    assert!(!bar.contains("sessions"), "{bar}");
}

#[test]
fn a_long_pool_line_wraps_inside_the_panel() {
    let mut d = started(stored());
    pool(&mut d, &[("alice", 3), ("bob", 2), ("carol", 2)]);
    let text = render_panel_only(&d, 44, 24);
    assert!(
        text.contains("7 sessions: alice ×3, bob ×2, carol ×2"),
        "{text}"
    );
    let mut d = started(
        ["an-account-with-a-long-name", "another-long-account-name"]
            .into_iter()
            .map(|n| AccountView::new(n, n))
            .collect(),
    );
    pool(
        &mut d,
        &[
            ("an-account-with-a-long-name", 2),
            ("another-long-account-name", 1),
        ],
    );
    let text = render_panel_only(&d, 44, 24);
    assert!(text.contains("│3 sessions:     "), "{text}");
    assert!(
        text.contains("│  an-account-with-a-long-name ×2,     "),
        "{text}"
    );
    assert!(
        text.contains("│  another-long-account-name ×1     "),
        "{text}"
    );
}

#[test]
fn narrow_terminal_status_bar_counts_the_sessions() {
    let mut d = started(stored());
    update(&mut d, "alice", snapshot(42.0, 2 * 3600 + 13 * 60, 18.0), 0);
    pool(&mut d, &[("alice", 2), ("bob", 1)]);
    let text = render_app(&d, 90, 8, None);
    assert!(text.contains(" alice · 3 sessions │ 5h 42%"), "{text}");
    insta::assert_snapshot!(text);
}

#[test]
fn panel_runway_forecast_from_samples_of_an_earlier_session() {
    use crate::proxy::usage_store::StoredSample;
    let mut d = started(stored());
    // An earlier session saw alice's 5-hour window at 40 % and 50 %; this one sees 60 %:
    // 0.4 points a minute. Her 40 % left last 100 minutes (13:47); bob's 10 % then last 25
    // (14:12); carol needs a login; alice resets at 15:07.
    d.seed_history(
        [(-3000, 40.0), (-1500, 50.0)]
            .into_iter()
            .map(|(when, used)| StoredSample {
                at: NOW + when,
                account: AccountId::from("alice"),
                five_hour: Some(used),
                weekly: Some(31.0),
            })
            .collect(),
    );
    update(&mut d, "alice", snapshot(60.0, 3 * 3600, 31.0), 0);
    update(&mut d, "bob", snapshot(90.0, 4 * 3600, 40.0), -600);
    d.accounts[2].stored = StoredState::NeedsLogin;
    assert_eq!(
        d.samples(WindowKind::FiveHour).len(),
        3,
        "the chart spans sessions"
    );
    let text = render_panel_only(&d, 44, 34);
    assert!(text.contains("pool dry 14:12–15:07, then alice"), "{text}");
    insta::assert_snapshot!(text);
}

#[test]
fn panel_runway_waits_for_ten_minutes_of_samples() {
    // Three minutes into a session, alice's 5-hour window rose 2 points: too little to
    // forecast on (it used to say "pool lasts over a week at this pace").
    let mut d = started(stored());
    update(&mut d, "alice", snapshot(40.0, 3 * 3600, 31.0), -180);
    update(&mut d, "alice", snapshot(42.0, 3 * 3600, 31.0), 0);
    update(&mut d, "bob", snapshot(10.0, 4 * 3600, 40.0), 0);
    let text = render_panel_only(&d, 44, 34);
    assert!(text.contains("│pool: no burn measured yet"), "{text}");
    insta::assert_snapshot!(text);
}

/// An account a newer cs-tui stored with a sign-in kind this one does not know: listed in the
/// panel and the picker with its state, never as ready.
#[test]
fn an_unsupported_sign_in_is_listed_as_such_in_the_panel_and_the_picker() {
    let mut accounts = stored();
    accounts.push(AccountView {
        stored: StoredState::Unsupported {
            kind: "device_code".into(),
        },
        ..AccountView::new("future", "future")
    });
    let d = started(accounts);
    let future = d.account(&AccountId::from("future")).unwrap();
    assert_eq!(
        d.state_of(future),
        crate::state::dashboard::AccountState::Unsupported
    );
    let panel = render_panel_only(&d, 44, 40);
    let row = panel
        .lines()
        .find(|l| l.contains("future"))
        .unwrap_or_else(|| panic!("{panel}"));
    assert!(row.contains("unsupported (newer cs-tui)"), "{panel}");
    let picker = render_app(&d, 120, 14, Some(&Overlay::Picker { selected: 3 }));
    let row = picker
        .lines()
        .find(|l| l.contains("future"))
        .unwrap_or_else(|| panic!("{picker}"));
    assert!(
        row.contains("unsupported sign-in `device_code` (from a newer cs-tui)"),
        "{picker}"
    );
}
