//! cs-tui's end-to-end tests, in one binary: the real `cs-tui` and the real `codex` over real
//! websockets and PTYs, with only the ChatGPT backend mocked (`cs-tui-testkit`). One module per
//! area; run one with `cargo test --test e2e -- MODULE::`.

mod support;

mod accounts_add;
mod accounts_cli;
mod accounts_concurrency;
mod accounts_refresh;
mod accounts_reset;
mod app_server_protocol;
mod backend_identity_e2e;
mod dashboard_proxy_e2e;
mod dashboard_replay_e2e;
mod demo_e2e;
mod doctor;
mod fuzz_relay;
mod ledger_e2e;
mod limits_e2e;
mod notify_e2e;
mod package_cli;
mod pane_codex_e2e;
mod pane_launch;
mod pool_e2e;
mod pool_transport_e2e;
mod processes_die_with_us;
mod proxy_refresh;
mod proxy_relay;
mod proxy_switching;
mod rerun_e2e;
mod serve_cli;
mod serve_metrics;
mod status_families;
mod unsupported_sign_in;
mod usage_samples_e2e;
