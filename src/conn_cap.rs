//! The accept loop of cs-tui's small loopback servers (`serve --metrics`, the demo's
//! simulated backend): at most so many connections served at once, each on a task of its
//! own, optionally for at most so long. What happens to one connection more is the server's
//! choice ([`WhenFull`]): closed at once unanswered (a scraper retries at its next scrape),
//! or left in the kernel's accept queue until a connection goes (a client that must not see
//! an error waits instead).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// What a server does with a connection beyond its cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WhenFull {
    /// Accept it and close it at once, unanswered.
    Close,
    /// Accept nothing until a connection goes: the new one waits in the accept queue.
    Wait,
}

/// A server's connection cap.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnectionCap {
    /// The server's name, for the log.
    pub name: &'static str,
    /// Connections served at once.
    pub max: usize,
    pub when_full: WhenFull,
    /// How long one connection may last (`None`: as long as it likes).
    pub lifetime: Option<Duration>,
}

/// Accepts connections on `listener` for ever (abort the task to stop), serving each with
/// `serve` on a task of its own within `cap`.
pub(crate) async fn accept_capped<F, Fut>(listener: TcpListener, cap: ConnectionCap, serve: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(cap.max));
    loop {
        let waited = match cap.when_full {
            WhenFull::Wait => match Arc::clone(&slots).acquire_owned().await {
                Ok(slot) => Some(slot),
                Err(_) => return, // never closed; nothing left to serve if it were
            },
            WhenFull::Close => None,
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, most likely: wait a little rather than spin.
                tracing::warn!(error = %e, "{}: accept failed", cap.name);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let slot = match waited {
            Some(slot) => slot,
            None => match Arc::clone(&slots).try_acquire_owned() {
                Ok(slot) => slot,
                Err(_) => {
                    tracing::debug!("{}: too many connections; one closed unanswered", cap.name);
                    continue;
                }
            },
        };
        let connection = serve(stream);
        tokio::spawn(async move {
            match cap.lifetime {
                Some(lifetime) => {
                    if tokio::time::timeout(lifetime, connection).await.is_err() {
                        tracing::debug!("{}: a connection outlived its time; closed", cap.name);
                    }
                }
                None => connection.await,
            }
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// A server that answers every line it reads with `ok\n` and holds the connection until
    /// its peer closes it.
    async fn start(
        max: usize,
        when_full: WhenFull,
    ) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cap = ConnectionCap {
            name: "test",
            max,
            when_full,
            lifetime: None,
        };
        let task = tokio::spawn(accept_capped(
            listener,
            cap,
            |mut stream: TcpStream| async move {
                let mut buf = [0u8; 64];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 || stream.write_all(b"ok\n").await.is_err() {
                        break;
                    }
                }
            },
        ));
        (addr, task)
    }

    /// Sends a line and reads the answer: `Some("ok\n")`, or `None` when the server closed.
    async fn ask(stream: &mut TcpStream) -> Option<String> {
        stream.write_all(b"hi\n").await.ok()?;
        let mut buf = [0u8; 3];
        stream.read_exact(&mut buf).await.ok()?;
        Some(String::from_utf8_lossy(&buf).into_owned())
    }

    #[tokio::test]
    async fn beyond_the_cap_a_connection_is_closed_unanswered_and_served_once_one_goes() {
        let (addr, task) = start(2, WhenFull::Close).await;
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            assert_eq!(ask(&mut s).await.as_deref(), Some("ok\n"));
            held.push(s);
        }
        let mut extra = TcpStream::connect(addr).await.unwrap();
        assert_eq!(ask(&mut extra).await, None, "closed unanswered");
        drop(held.pop());
        // The server sees it close in its own time: a new connection is served once it did.
        let deadline = tokio::time::Instant::now() + cs_tui_testkit::WAIT;
        loop {
            let mut s = TcpStream::connect(addr).await.unwrap();
            if ask(&mut s).await.is_some() {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "never served again");
        }
        task.abort();
    }

    #[tokio::test]
    async fn beyond_the_cap_a_connection_waits_and_is_served_once_one_goes() {
        let (addr, task) = start(2, WhenFull::Wait).await;
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            assert_eq!(ask(&mut s).await.as_deref(), Some("ok\n"));
            held.push(s);
        }
        // The kernel takes the connection; the server does not serve it while both are held.
        let mut extra = TcpStream::connect(addr).await.unwrap();
        let mut waiting = tokio::spawn(async move { ask(&mut extra).await });
        // (Never answered while both are held: a correct server cannot fail this window.)
        let early = tokio::time::timeout(Duration::from_millis(300), &mut waiting).await;
        assert!(early.is_err(), "served beyond the cap: {early:?}");
        drop(held.pop());
        let answer = tokio::time::timeout(cs_tui_testkit::WAIT, waiting)
            .await
            .expect("served once a connection went")
            .unwrap();
        assert_eq!(answer.as_deref(), Some("ok\n"));
        task.abort();
    }
}
