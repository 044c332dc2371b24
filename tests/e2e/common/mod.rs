#![allow(dead_code)]
//! Shared helpers for the proxy's end-to-end tests.

pub mod echo_upstream;
pub mod raw;

use std::time::Duration;

use cs_tui::proxy::events::ProxyEvent;
use cs_tui_testkit::WsClient;
use serde_json::{Value, json};
use tokio::sync::broadcast;

pub const WAIT: Duration = Duration::from_secs(20);

/// Waits for the first event matching `pred`, panicking after `timeout` with what was seen.
pub async fn wait_event(
    rx: &mut broadcast::Receiver<ProxyEvent>,
    what: &str,
    pred: impl Fn(&ProxyEvent) -> bool,
) -> ProxyEvent {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(event)) => {
                if pred(&event) {
                    return event;
                }
                seen.push(event);
            }
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
            Ok(Err(e)) => panic!("event channel closed waiting for {what}: {e}"),
            Err(_) => panic!("timed out waiting for {what}; saw: {seen:#?}"),
        }
    }
}

/// Starts a thread in `cwd` and returns its id.
pub async fn start_thread(client: &mut WsClient, cwd: &std::path::Path) -> String {
    let result = client
        .request(
            "thread/start",
            json!({"cwd": cwd, "approvalPolicy": "never"}),
        )
        .await
        .expect("thread/start");
    result["thread"]["id"]
        .as_str()
        .expect("thread id")
        .to_owned()
}

/// Sends `turn/start` and waits for that turn's `turn/completed`.
pub async fn run_turn(client: &mut WsClient, thread_id: &str, text: &str) -> Value {
    let started = client
        .request(
            "turn/start",
            json!({"threadId": thread_id, "input": [{"type": "text", "text": text}]}),
        )
        .await
        .expect("turn/start");
    let turn_id = started["turn"]["id"].as_str().expect("turn id").to_owned();
    client
        .wait_for(WAIT, "turn/completed", |m| {
            m["method"] == "turn/completed" && m["params"]["turn"]["id"] == turn_id.as_str()
        })
        .await
}

/// The agent messages a client received, in order.
pub fn agent_texts(client: &WsClient) -> Vec<String> {
    client
        .received_with_method("item/completed")
        .iter()
        .filter(|m| m["params"]["item"]["type"] == "agentMessage")
        .filter_map(|m| m["params"]["item"]["text"].as_str().map(str::to_owned))
        .collect()
}
