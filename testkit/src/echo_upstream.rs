//! A websocket server that echoes every data frame back, standing in for the app-server where a
//! test checks the relay's transport (exact bytes, frame kinds, sizes) rather than Codex. It
//! listens on a loopback port or, as cs-tui's app-server does, on a unix socket.

use std::path::{Path, PathBuf};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Starts the echo server on a loopback port; returns its `ws://` URL.
pub async fn start() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(echo(stream));
        }
    });
    url
}

/// Starts the echo server on a unix socket in `dir`; returns the socket's path.
pub fn start_unix(dir: &Path) -> PathBuf {
    let path = dir.join("echo.sock");
    let listener = UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(echo(stream));
        }
    });
    path
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(stream: S) {
    let config = WebSocketConfig::default()
        .max_message_size(Some(512 << 20))
        .max_frame_size(Some(512 << 20));
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    let (mut tx, mut rx) = ws.split();
    while let Some(Ok(message)) = rx.next().await {
        // tungstenite queued the reply to a close frame when it read it (sending a close of
        // our own now would be refused); closing the sink writes that reply, as a real server
        // answers the close handshake.
        if message.is_close() {
            let _ = tx.close().await;
            break;
        }
        let echo = message.is_text() || message.is_binary();
        if echo && tx.send(message).await.is_err() {
            break;
        }
    }
}
