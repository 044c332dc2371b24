//! What the relay itself makes of the server messages it watches ([`RELAY_WATCHED`]): the
//! observations the session core acts on, and the one request that must never reach a client.
//!
//! [`RELAY_WATCHED`]: crate::proxy::rpc::RELAY_WATCHED

use super::{ConnId, EventSink, Interceptor, Observation, RelayEvent};
use crate::proxy::rpc::{
    Envelope, ErrorParams, ModelReroutedParams, RateLimitsUpdatedParams,
    ThreadSettingsUpdatedParams, ThreadStartedParams, TokenUsageParams, TurnParams, method,
};

/// Reports what a watched message (whose top-level method is `watched`) tells the core.
/// Returns true when the message must not be forwarded.
pub(super) fn built_in<I: Interceptor>(
    conn: ConnId,
    watched: &str,
    envelope: &Envelope,
    events: &EventSink<I>,
) -> bool {
    let observe = |o: Observation| events.send(RelayEvent::Observed(conn, o));
    match watched {
        // Sent to every connection; the proxy answers it once on its control connection, and
        // the TUI must never answer it (it would hand the app-server the wrong tokens).
        method::TOKENS_REFRESH => return envelope.is_request(),
        method::RATE_LIMITS_UPDATED => {
            if let Some(p) = envelope.params::<RateLimitsUpdatedParams>() {
                observe(Observation::RateLimits(Box::new(p.rate_limits)));
            }
        }
        method::ERROR => {
            if let Some(p) = envelope.params::<ErrorParams>()
                && p.error.is_usage_limit()
            {
                observe(Observation::UsageLimitError {
                    thread_id: p.thread_id,
                    turn_id: p.turn_id,
                });
            }
        }
        method::TURN_STARTED => {
            if let Some(p) = envelope.params::<TurnParams>() {
                observe(Observation::TurnStarted {
                    thread_id: p.thread_id,
                    turn_id: p.turn.id,
                });
            }
        }
        method::TURN_COMPLETED => {
            if let Some(p) = envelope.params::<TurnParams>() {
                observe(Observation::TurnCompleted {
                    thread_id: p.thread_id,
                    turn_id: p.turn.id,
                    status: p.turn.status,
                });
            }
        }
        method::TOKEN_USAGE_UPDATED => {
            if let Some(p) = envelope.params::<TokenUsageParams>() {
                observe(Observation::TokenUsage {
                    thread_id: p.thread_id,
                    turn_id: p.turn_id,
                    last: p.token_usage.last,
                    total: p.token_usage.total,
                });
            }
        }
        method::THREAD_STARTED => {
            if let Some(p) = envelope.params::<ThreadStartedParams>() {
                observe(Observation::ThreadStarted {
                    thread_id: p.thread.id,
                    model: p.thread.model,
                });
            }
        }
        method::THREAD_SETTINGS_UPDATED => {
            if let Some(p) = envelope.params::<ThreadSettingsUpdatedParams>() {
                observe(Observation::ThreadSettings {
                    thread_id: p.thread_id,
                    model: p.thread_settings.model,
                });
            }
        }
        method::MODEL_REROUTED => {
            if let Some(p) = envelope.params::<ModelReroutedParams>() {
                observe(Observation::ModelRerouted {
                    thread_id: p.thread_id,
                    turn_id: p.turn_id,
                    model: p.to_model,
                });
            }
        }
        _ => {}
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::relay::NoInterceptor;
    use tokio::sync::mpsc;

    fn run(text: &str, events: &mpsc::UnboundedSender<RelayEvent<NoInterceptor>>) -> bool {
        let envelope = Envelope::parse(text).unwrap();
        built_in(
            7,
            envelope.method.unwrap(),
            &envelope,
            &events.clone().into(),
        )
    }

    #[test]
    fn refresh_requests_are_dropped_and_nothing_else_is() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        assert!(run(
            r#"{"id":0,"method":"account/chatgptAuthTokens/refresh","params":{"previousAccountId":"a","reason":"unauthorized"}}"#,
            &tx
        ));
        // The same method without an id is not a request.
        assert!(!run(
            r#"{"method":"account/chatgptAuthTokens/refresh"}"#,
            &tx
        ));
        assert!(!run(r#"{"method":"item/started","params":{}}"#, &tx));
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn model_changes_become_observations() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        // As 0.169.0 sends them (threadSettings abridged).
        assert!(!run(
            r#"{"emittedAtMs":1,"method":"thread/settings/updated","params":{"threadId":"t1","threadSettings":{"approvalPolicy":"never","collaborationMode":{"mode":"default","settings":{"model":"gpt-5.1-codex-mini"}},"cwd":"/tmp","model":"gpt-5.1-codex-mini","modelProvider":"openai"}}}"#,
            &tx
        ));
        assert!(!run(
            r#"{"method":"model/rerouted","params":{"threadId":"t1","turnId":"u1","fromModel":"a","toModel":"b","reason":"highRiskCyberActivity"}}"#,
            &tx
        ));
        let got: Vec<Observation> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|e| match e {
                RelayEvent::Observed(7, o) => o,
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(
            matches!(&got[..], [
                Observation::ThreadSettings { thread_id, model: Some(m) },
                Observation::ModelRerouted { turn_id, model: to, .. },
            ] if thread_id == "t1" && m == "gpt-5.1-codex-mini" && turn_id == "u1" && to == "b"),
            "{got:?}"
        );
    }

    #[test]
    fn watched_messages_become_observations() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let messages = [
            r#"{"method":"turn/started","params":{"threadId":"t1","turn":{"id":"u1","items":[],"status":"inProgress"}}}"#,
            r#"{"method":"account/rateLimits/updated","params":{"rateLimits":{"primary":{"usedPercent":97,"windowDurationMins":300,"resetsAt":5}}}}"#,
            r#"{"method":"error","params":{"error":{"message":"limit","codexErrorInfo":"usageLimitExceeded"},"willRetry":false,"threadId":"t1","turnId":"u1"}}"#,
            r#"{"method":"error","params":{"error":{"message":"other","codexErrorInfo":"other"},"willRetry":false,"threadId":"t1","turnId":"u1"}}"#,
            r#"{"method":"turn/completed","params":{"threadId":"t1","turn":{"id":"u1","items":[],"status":"failed"}}}"#,
        ];
        for m in messages {
            assert!(!run(m, &tx));
        }
        let got: Vec<Observation> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|e| match e {
                RelayEvent::Observed(7, o) => o,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(matches!(&got[0], Observation::TurnStarted { turn_id, .. } if turn_id == "u1"));
        assert!(
            matches!(&got[1], Observation::RateLimits(s) if s.five_hour().unwrap().used_percent == 97.0)
        );
        assert!(matches!(&got[2], Observation::UsageLimitError { .. }));
        assert!(
            matches!(&got[3], Observation::TurnCompleted { status: Some(s), .. } if s == "failed")
        );
    }

    #[test]
    fn token_usage_and_thread_models_become_observations() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        // The shapes of `codex app-server generate-ts` (0.169.0).
        assert!(!run(
            r#"{"method":"thread/tokenUsage/updated","params":{"threadId":"t1","turnId":"u1","tokenUsage":{"total":{"totalTokens":300,"inputTokens":250,"cachedInputTokens":40,"cacheWriteInputTokens":0,"outputTokens":50,"reasoningOutputTokens":9},"last":{"totalTokens":130,"inputTokens":120,"cachedInputTokens":40,"cacheWriteInputTokens":0,"outputTokens":10,"reasoningOutputTokens":2},"modelContextWindow":272000}}}"#,
            &tx
        ));
        assert!(!run(
            r#"{"method":"thread/started","params":{"thread":{"id":"t1","model":"gpt-5.1-codex","modelProvider":"openai","preview":"","createdAt":0}}}"#,
            &tx
        ));
        let got: Vec<Observation> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|e| match e {
                RelayEvent::Observed(7, o) => o,
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(
            matches!(
                &got[0],
                Observation::TokenUsage { turn_id, last, total, .. }
                    if turn_id == "u1"
                        && (last.input_tokens, last.cached_input_tokens, last.output_tokens) == (120, 40, 10)
                        && total.total_tokens == 300
            ),
            "{got:?}"
        );
        assert!(
            matches!(
                &got[1],
                Observation::ThreadStarted { thread_id, model: Some(m) } if thread_id == "t1" && m == "gpt-5.1-codex"
            ),
            "{got:?}"
        );
    }
}
