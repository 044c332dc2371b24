//! Codex turns over the app-server protocol (docs/protocol.md §2), for tests that talk to an
//! app-server (directly or through cs-tui's proxy) with a [`WsClient`].

use serde_json::{Value, json};

use crate::{WAIT, WsClient};

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
