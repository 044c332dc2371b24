//! One direction of a relayed connection: reads raw bytes from one side, finds the frame
//! boundaries, and writes the same bytes to the other side, batching every complete frame that
//! is available into one write. Only text messages that may be watched are looked at. A large
//! frame the relay need not look at is not buffered: its header and first bytes go out at
//! once and the rest is spliced socket to socket by the kernel.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::io::{self, Cursor, IoSlice};
use std::sync::atomic::Ordering;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};

use super::splice::Splicer;
use super::{Actions, Connection, Direction, Inspected, Interceptor, Verdict, inspect};
use crate::proxy::rpc::{self, Envelope, Lead, OWN_ID_PREFIX, RELAY_WATCHED};
use crate::proxy::socket::{ReadHalf, SocketRef, WriteHalf};
use crate::proxy::upstream::MAX_MESSAGE;

/// How much to read at a time when no large frame is pending. Bigger batches mean fewer
/// wake-ups per byte: on the 2-core test machine 256 KiB moved ~20 % more small messages per
/// second than 64 KiB.
const READ_CHUNK: usize = 256 << 10;
/// A frame with at least this much of its payload still to come is passed through as it
/// arrives (spliced where possible) when the relay does not need to look at it; one it needs
/// is read to its exact end, so the next frame starts a fresh buffer.
const LARGE: usize = 64 << 10;
/// A buffer grown beyond this for one frame is given back once the frame is forwarded.
const KEEP_CAPACITY: usize = 4 << 20;
/// How much is read after a pass-through: a frame header and its [`Lead`], with room to spare.
const PEEK: usize = 4 << 10;
/// How many bytes of a masked frame are unmasked to read its [`Lead`].
const LEAD_BYTES: usize = 64;

/// What a pump is asked to do besides relaying (from the core, the interceptor, or the pump
/// of the other direction).
#[derive(Debug)]
pub(super) enum PumpAction {
    /// A whole data message, already framed for this direction.
    Message(Bytes),
    /// A control frame; it may go between the fragments of a message. `closes` marks a close
    /// frame, after which nothing else may be sent.
    Control {
        frame: Bytes,
        closes: bool,
    },
    ReleaseHeld,
    DropHeld,
}

/// Frames a message for `direction`: masked toward the app-server (the proxy is its client),
/// unmasked toward the client.
pub(super) fn encode(direction: Direction, mut frame: Frame) -> Bytes {
    if direction == Direction::ToUpstream {
        frame.header_mut().mask = Some(rand::random());
    }
    let mut out = Vec::with_capacity(frame.len());
    frame
        .format(&mut out)
        .expect("formatting into a Vec cannot fail");
    out.into()
}

pub(super) fn close_frame(direction: Direction, code: CloseCode, reason: &'static str) -> Bytes {
    encode(
        direction,
        Frame::close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })),
    )
}

/// Something in the source's byte stream the relay cannot pass on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Violation {
    Protocol(&'static str),
    TooBig,
}

impl Violation {
    fn code(self) -> CloseCode {
        match self {
            Violation::Protocol(_) => CloseCode::Protocol,
            Violation::TooBig => CloseCode::Size,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Violation::Protocol(why) => why,
            Violation::TooBig => "message too big",
        }
    }
}

/// A fragmented data message being read.
enum Fragmented {
    /// Forwarded frame by frame; only its size is tracked.
    Streaming { size: usize },
    /// Kept until its final frame, then looked at as a whole: `payload` is the unmasked
    /// concatenation, `frames` the original frames, forwarded or held byte for byte.
    Buffered {
        frames: Vec<Bytes>,
        payload: Vec<u8>,
    },
}

pub(super) struct Pump<'c, I: Interceptor> {
    direction: Direction,
    conn: &'c Connection<I>,
    /// Bytes read from the source, starting at a frame boundary.
    buf: BytesMut,
    /// Bytes to write to the destination, in order.
    out: VecDeque<Bytes>,
    message: Option<Fragmented>,
    /// A fragmented message is being streamed to the destination: until its final frame only
    /// control frames may be sent besides its own.
    out_mid_message: bool,
    /// Whole messages (injected or released) waiting for that message to end.
    deferred: VecDeque<Bytes>,
    /// Frames of withheld messages, in arrival order.
    held: VecDeque<Bytes>,
    /// A close frame went to the destination; nothing may follow it.
    closed: bool,
    /// The frame at the front of `buf` needs this many bytes in all.
    awaiting: Option<usize>,
    /// `buf` grew beyond [`KEEP_CAPACITY`] for one frame.
    oversized: bool,
    /// Bytes of the current frame still to pass through unlooked at.
    pass_through: usize,
    /// The last frame passed through; the next read is a [`PEEK`].
    after_pass_through: bool,
    /// The frame being passed through is the last of a streamed message.
    message_ends_after_pass_through: bool,
    /// `None` until the first pass-through; then `Some(None)` where splicing is unavailable.
    splicer: Option<Option<Splicer>>,
}

impl<'c, I: Interceptor> Pump<'c, I> {
    pub(super) fn new(direction: Direction, conn: &'c Connection<I>, leftover: BytesMut) -> Self {
        Self {
            direction,
            conn,
            buf: leftover,
            out: VecDeque::new(),
            message: None,
            out_mid_message: false,
            deferred: VecDeque::new(),
            held: VecDeque::new(),
            closed: false,
            awaiting: None,
            oversized: false,
            pass_through: 0,
            after_pass_through: false,
            message_ends_after_pass_through: false,
            splicer: None,
        }
    }

    /// Relays until the source ends or fails, or breaks the protocol; then shuts down the
    /// destination's write half so its peer sees the end too.
    pub(super) async fn run(
        mut self,
        mut src: ReadHalf<'_>,
        mut dst: WriteHalf<'_>,
        mut actions: mpsc::UnboundedReceiver<PumpAction>,
    ) {
        let conn = self.conn.id;
        let side = self.direction.source();
        loop {
            let processed = self.process();
            if !self.out.is_empty() && write_chunks(&mut dst, &mut self.out).await.is_err() {
                tracing::debug!(conn, side, "the destination stopped accepting writes");
                return;
            }
            if let Err(violation) = processed {
                tracing::warn!(
                    conn,
                    side,
                    reason = violation.reason(),
                    "ending a connection whose peer broke the websocket protocol"
                );
                self.fail(violation, &mut dst).await;
                return;
            }
            if self.pass_through > 0 {
                if let Err(err) = self.pass_through(&mut src, &mut dst).await {
                    tracing::debug!(conn, side, %err, "passing a frame through failed");
                    break;
                }
                if std::mem::take(&mut self.message_ends_after_pass_through) {
                    self.end_streamed_message(&mut 0);
                }
                continue;
            }
            let limit = self.prepare_read();
            let event = {
                let mut room = (&mut self.buf).limit(limit);
                tokio::select! {
                    read = src.read_buf(&mut room) => Ok(read),
                    Some(action) = actions.recv() => Err(action),
                }
            };
            match event {
                Ok(Ok(0)) => {
                    if !self.buf.is_empty() || self.message.is_some() {
                        tracing::debug!(conn, side, "the stream ended inside a message");
                    }
                    break;
                }
                Ok(Ok(_)) => self.after_pass_through = false,
                Ok(Err(err)) => {
                    tracing::debug!(conn, side, %err, "read failed");
                    break;
                }
                Err(action) => self.act(action),
            }
        }
        // The app-server drops a connection on a close frame without answering it (0.169.0);
        // answer the client's close for it, so the client sees its close handshake complete.
        if self.direction == Direction::ToClient
            && !self.closed
            && self.conn.closed(Direction::ToUpstream)
        {
            let reply = close_frame(self.direction, CloseCode::Normal, "");
            let _ = dst.write_all(&reply).await;
        }
        let _ = dst.shutdown().await;
    }

    /// Moves the rest of the current frame from `src` to `dst` without looking at it: spliced
    /// into a unix socket where the kernel can, else copied through `buf` a chunk at a time.
    async fn pass_through(
        &mut self,
        src: &mut ReadHalf<'_>,
        dst: &mut WriteHalf<'_>,
    ) -> io::Result<()> {
        let n = std::mem::take(&mut self.pass_through);
        // Splicing pays only into a unix socket. Measured with `cargo bench --bench proxy` on
        // the 2-core test machine (Linux 6.18), 1 MiB frames from the client's TCP socket into
        // the app-server's unix socket moved ~1.6x as fast spliced as copied, while frames
        // spliced into a TCP socket moved at 0.6-0.8x the speed of a copy.
        let into_unix = matches!(dst.socket(), SocketRef::Unix(_));
        if into_unix && let Some(splicer) = self.splicer.get_or_insert_with(Splicer::new) {
            return splicer.transfer(src.socket(), dst.socket(), n).await;
        }
        let mut left = n;
        while left > 0 {
            self.buf.reserve(READ_CHUNK);
            let read = src
                .read_buf(&mut (&mut self.buf).limit(left.min(READ_CHUNK)))
                .await?;
            if read == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            left -= read;
            dst.write_all_buf(&mut self.buf).await?;
        }
        Ok(())
    }

    /// Tells both peers why the connection ends: the offending source gets the violation's
    /// close code (through the other direction's pump), the destination a close of its own.
    async fn fail<W: AsyncWrite + Unpin>(&mut self, violation: Violation, dst: &mut W) {
        let back = self.direction.reverse();
        let _ = self.conn.route(back).send(PumpAction::Control {
            frame: close_frame(back, violation.code(), violation.reason()),
            closes: true,
        });
        if !self.closed {
            let (code, reason) = match self.direction {
                Direction::ToClient => (CloseCode::Error, "the app-server broke the protocol"),
                Direction::ToUpstream => (CloseCode::Away, "the client broke the protocol"),
            };
            let _ = dst
                .write_all(&close_frame(self.direction, code, reason))
                .await;
        }
        let _ = dst.shutdown().await;
    }

    /// Makes room for the next read and says how much to read at most.
    fn prepare_read(&mut self) -> usize {
        if self.buf.is_empty() && self.oversized {
            self.buf = BytesMut::new();
            self.oversized = false;
        }
        match self.awaiting {
            Some(total) if total - self.buf.len() >= LARGE => {
                let missing = total - self.buf.len();
                self.buf.reserve(missing);
                self.oversized |= total > KEEP_CAPACITY;
                missing
            }
            // After a large frame passed through, the next one is probably large too: read
            // just enough to see its header and first bytes, so that it can pass through
            // whole instead of a read-sized piece of it being copied in and out.
            None if self.after_pass_through => {
                self.buf.reserve(PEEK);
                PEEK
            }
            _ => {
                self.buf.reserve(READ_CHUNK);
                usize::MAX
            }
        }
    }

    fn act(&mut self, action: PumpAction) {
        match action {
            PumpAction::Message(frame) => self.send_message(frame),
            PumpAction::Control { frame, closes } => {
                if !self.closed {
                    self.out.push_back(frame);
                    self.set_closed(closes);
                }
            }
            PumpAction::ReleaseHeld => {
                let held = std::mem::take(&mut self.held);
                for frame in held {
                    self.send_message(frame);
                }
            }
            PumpAction::DropHeld => self.held.clear(),
        }
    }

    fn set_closed(&mut self, closes: bool) {
        if closes {
            self.closed = true;
            self.conn.mark_closed(self.direction);
        }
    }

    /// Queues frames of a whole message, after the message being streamed if there is one.
    fn send_message(&mut self, frame: Bytes) {
        if self.closed {
            tracing::debug!(
                conn = self.conn.id,
                "not sending a message after the close frame"
            );
        } else if self.out_mid_message {
            self.deferred.push_back(frame);
        } else {
            self.out.push_back(frame);
        }
    }

    /// Handles every complete frame in `buf`. Frames forwarded unchanged are gathered into one
    /// run and split off the buffer together, so a batch of ordinary frames costs one split
    /// and one write, whatever their number.
    fn process(&mut self) -> Result<(), Violation> {
        if self.awaiting.is_some_and(|total| self.buf.len() < total) {
            return Ok(());
        }
        self.awaiting = None;
        // One lock for the whole batch: the dispatcher, the only other user, runs in this
        // task and cannot interleave with this synchronous pass.
        let conn = self.conn;
        let mut interceptor = conn.interceptor();
        let mut run = 0;
        let result = loop {
            let mut cursor = Cursor::new(&self.buf[run..]);
            let (header, len) = match FrameHeader::parse(&mut cursor) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => break Ok(()),
                Err(_) => break Err(Violation::Protocol("invalid frame header")),
            };
            let head = cursor.position() as usize;
            if len > MAX_MESSAGE as u64 {
                break Err(Violation::TooBig);
            }
            let total = head + len as usize;
            let have = self.buf.len() - run;
            if have < total {
                // A large frame the relay need not look at goes on as it arrives.
                if total - have >= LARGE {
                    match self.frame(&mut interceptor, &header, head, total, have, &mut run) {
                        Ok(true) => {
                            self.pass_through = total - have;
                            self.after_pass_through = true;
                            break Ok(());
                        }
                        Ok(false) => {}
                        Err(violation) => break Err(violation),
                    }
                }
                self.awaiting = Some(total);
                break Ok(());
            }
            if let Err(violation) =
                self.frame(&mut interceptor, &header, head, total, total, &mut run)
            {
                break Err(violation);
            }
        };
        self.flush_run(&mut run);
        result
    }

    /// Moves the forwarded run at the front of `buf` to the output.
    fn flush_run(&mut self, run: &mut usize) {
        if *run > 0 {
            self.out.push_back(self.buf.split_to(*run).freeze());
            *run = 0;
        }
    }

    /// Handles the frame at `buf[run..]`, `total` bytes long, of which `have` are buffered.
    /// A whole frame is always handled: it extends the forwarded run or is taken out of the
    /// buffer. A partial one is handled only when the relay need not look at its payload
    /// (it is then forwarded as it arrives); otherwise this returns `false` and changes
    /// nothing.
    fn frame(
        &mut self,
        interceptor: &mut I,
        header: &FrameHeader,
        head: usize,
        total: usize,
        have: usize,
        run: &mut usize,
    ) -> Result<bool, Violation> {
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return Err(Violation::Protocol(
                "reserved bits set (no extension was agreed)",
            ));
        }
        match (self.direction, header.mask.is_some()) {
            (Direction::ToUpstream, false) => {
                return Err(Violation::Protocol("an unmasked frame from the client"));
            }
            (Direction::ToClient, true) => {
                return Err(Violation::Protocol("a masked frame from the app-server"));
            }
            _ => {}
        }
        let len = total - head;
        let start = *run;
        let whole = have == total;
        match header.opcode {
            OpCode::Control(control) => {
                if !header.is_final || len > 125 {
                    return Err(Violation::Protocol(
                        "a fragmented or oversized control frame",
                    ));
                }
                if !whole {
                    return Ok(false);
                }
                if self.closed {
                    // We closed this direction ourselves; the peer's own close is redundant.
                    self.flush_run(run);
                    self.buf.advance(total);
                    return Ok(true);
                }
                self.set_closed(control == Control::Close);
                *run += total;
                Ok(true)
            }
            OpCode::Data(Data::Continue) => match self.message.take() {
                None => Err(Violation::Protocol(
                    "a continuation frame outside a message",
                )),
                Some(Fragmented::Streaming { size }) => {
                    let size = size + len;
                    if size > MAX_MESSAGE {
                        return Err(Violation::TooBig);
                    }
                    *run += have;
                    if !header.is_final {
                        self.message = Some(Fragmented::Streaming { size });
                    } else if whole {
                        self.end_streamed_message(run);
                    } else {
                        self.message_ends_after_pass_through = true;
                    }
                    Ok(true)
                }
                Some(Fragmented::Buffered { frames, payload }) if !whole => {
                    if payload.len() + len > MAX_MESSAGE {
                        return Err(Violation::TooBig);
                    }
                    self.message = Some(Fragmented::Buffered { frames, payload });
                    Ok(false)
                }
                Some(Fragmented::Buffered {
                    mut frames,
                    mut payload,
                }) => {
                    if payload.len() + len > MAX_MESSAGE {
                        return Err(Violation::TooBig);
                    }
                    let from = payload.len();
                    payload.extend_from_slice(&self.buf[start + head..start + total]);
                    if let Some(mask) = header.mask {
                        unmask(&mut payload[from..], mask);
                    }
                    // Control frames that came between the fragments go first.
                    self.flush_run(run);
                    frames.push(self.buf.split_to(total).freeze());
                    if !header.is_final {
                        self.message = Some(Fragmented::Buffered { frames, payload });
                        return Ok(true);
                    }
                    let (verdict, actions) =
                        examine(self.conn, interceptor, self.direction, &payload);
                    match verdict {
                        Verdict::Forward => self.out.extend(frames),
                        Verdict::Hold => self.held.extend(frames),
                        Verdict::Drop => {}
                    }
                    self.apply(actions, run);
                    Ok(true)
                }
            },
            OpCode::Data(data) => {
                if self.message.is_some() {
                    return Err(Violation::Protocol("a new message inside a fragmented one"));
                }
                let payload = &self.buf[start + head..start + have];
                let text = data == Data::Text;
                if text && header.is_final && whole {
                    log_if_not_json_object(self.conn.id, self.direction, payload, header.mask);
                }
                if !(text && worth_a_look(interceptor, self.direction, payload, header.mask)) {
                    *run += have;
                    if !header.is_final {
                        self.message = Some(Fragmented::Streaming { size: len });
                        self.out_mid_message = true;
                    }
                    return Ok(true);
                }
                if !whole {
                    return Ok(false);
                }
                let payload = unmasked(payload, header.mask);
                if !header.is_final {
                    let payload = payload.into_owned();
                    self.flush_run(run);
                    let frames = vec![self.buf.split_to(total).freeze()];
                    self.message = Some(Fragmented::Buffered { frames, payload });
                    return Ok(true);
                }
                let (verdict, actions) = examine(self.conn, interceptor, self.direction, &payload);
                match verdict {
                    Verdict::Forward => *run += total,
                    Verdict::Drop | Verdict::Hold => {
                        self.flush_run(run);
                        let frame = self.buf.split_to(total).freeze();
                        if verdict == Verdict::Hold {
                            self.held.push_back(frame);
                        }
                    }
                }
                self.apply(actions, run);
                Ok(true)
            }
        }
    }

    /// The destination is at a message boundary again: what waited for it may go.
    fn end_streamed_message(&mut self, run: &mut usize) {
        self.out_mid_message = false;
        if !self.deferred.is_empty() {
            self.flush_run(run);
            self.out.extend(self.deferred.drain(..));
        }
    }

    /// Carries out an interceptor's actions right after the message it decided about: those
    /// for this direction in place, the others through the other pump.
    fn apply(&mut self, actions: Actions, run: &mut usize) {
        if actions.is_empty() {
            return;
        }
        self.flush_run(run);
        for action in actions.into_iter() {
            let (direction, action) = self.conn.prepare(action);
            if direction == self.direction {
                self.act(action);
            } else {
                let _ = self.conn.route(direction).send(action);
            }
        }
    }
}

/// Whether a text message starting with `payload` needs a closer look, judged from its first
/// bytes: in the common case its method is named right there and is not watched.
fn worth_a_look<I: Interceptor>(
    interceptor: &I,
    direction: Direction,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) -> bool {
    if interceptor.watched_text(direction).is_some() {
        // Any message may contain the string: only the whole text can tell.
        return true;
    }
    let theirs = interceptor.watched(direction);
    let ours = built_in_watched(direction);
    if ours.is_empty() && theirs.is_empty() {
        return false;
    }
    let mut prefix = [0u8; LEAD_BYTES];
    let first = match mask {
        Some(mask) => {
            let n = payload.len().min(LEAD_BYTES);
            let prefix = &mut prefix[..n];
            prefix.copy_from_slice(&payload[..n]);
            unmask(prefix, mask);
            prefix
        }
        None => payload,
    };
    match rpc::lead(first) {
        Lead::Method(name) => listed(ours, name) || listed(theirs, name),
        // Responses may be to the proxy's own requests, and other shapes may hide a watched
        // method anywhere: scan them.
        Lead::Id(_) | Lead::Unknown => true,
    }
}

fn built_in_watched(direction: Direction) -> &'static [&'static str] {
    match direction {
        Direction::ToClient => RELAY_WATCHED,
        Direction::ToUpstream => &[],
    }
}

fn listed(names: &[&str], name: &[u8]) -> bool {
    names.iter().any(|n| n.as_bytes() == name)
}

/// Decides about a whole text message (`payload` unmasked): finds whether it is watched or a
/// response to the proxy's own request (a scan, no parse), and only then parses it, reports
/// what the core wants to know and asks the interceptor.
fn examine<I: Interceptor>(
    conn: &Connection<I>,
    interceptor: &mut I,
    direction: Direction,
    payload: &[u8],
) -> (Verdict, Actions) {
    let mut actions = Actions::default();
    let lead = rpc::lead(payload);
    let own = direction == Direction::ToClient
        && conn.own_ids.load(Ordering::Relaxed)
        && lead.may_be_own_response(payload);
    let ours = built_in_watched(direction);
    let hit = {
        let theirs = interceptor.watched(direction);
        let wanted = |name: &[u8]| listed(ours, name) || listed(theirs, name);
        match lead {
            Lead::Method(name) => wanted(name),
            Lead::Id(_) | Lead::Unknown => rpc::method_candidates(payload).any(wanted),
        }
    };
    let text_hit = interceptor
        .watched_text(direction)
        .is_some_and(|needle| memchr::memmem::find(payload, needle.as_bytes()).is_some());
    if !hit && !own && !text_hit {
        return (Verdict::Forward, actions);
    }
    let Ok(text) = std::str::from_utf8(payload) else {
        tracing::warn!(
            conn = conn.id,
            side = direction.source(),
            "a watched text message is not UTF-8; forwarding it unchanged"
        );
        return (Verdict::Forward, actions);
    };
    let Some(envelope) = Envelope::parse(text) else {
        tracing::warn!(
            conn = conn.id,
            side = direction.source(),
            len = text.len(),
            "a watched message did not parse; forwarding it unchanged"
        );
        return (Verdict::Forward, actions);
    };
    let own = own
        && envelope.method.is_none()
        && matches!(&envelope.id, Some(serde_json::Value::String(id)) if id.starts_with(OWN_ID_PREFIX));
    let method = envelope.method;
    let theirs =
        own || text_hit || method.is_some_and(|m| interceptor.watched(direction).contains(&m));
    // Responses to the proxy's own requests were never asked for by the client, and a refresh
    // request must only be answered by the proxy: neither may reach the client, even later.
    let mut forced_drop = own;
    if let Some(m) = method.filter(|m| ours.contains(m)) {
        forced_drop |= inspect::built_in(conn.id, m, &envelope, &conn.events);
    }
    let verdict = if theirs {
        let message = Inspected {
            conn: conn.id,
            direction,
            text,
            envelope: &envelope,
        };
        interceptor.inspect(&message, &mut actions)
    } else {
        Verdict::Forward
    };
    let verdict = if forced_drop { Verdict::Drop } else { verdict };
    (verdict, actions)
}

/// Malformed JSON is forwarded, but logged (it usually means a broken client or server).
fn log_if_not_json_object(
    conn: super::ConnId,
    direction: Direction,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) {
    let byte = |i: usize| payload[i] ^ mask.map_or(0, |m| m[i % 4]);
    let mut content = (0..payload.len()).filter(|&i| !byte(i).is_ascii_whitespace());
    let first = content.next();
    let last = (0..payload.len())
        .rev()
        .find(|&i| !byte(i).is_ascii_whitespace());
    let looks_right =
        matches!((first, last), (Some(f), Some(l)) if byte(f) == b'{' && byte(l) == b'}');
    if !looks_right {
        tracing::warn!(
            conn,
            side = direction.source(),
            len = payload.len(),
            "forwarding a text message that is not a JSON object"
        );
    }
}

fn unmasked(payload: &[u8], mask: Option<[u8; 4]>) -> Cow<'_, [u8]> {
    match mask {
        None => Cow::Borrowed(payload),
        Some(mask) => {
            let mut copy = payload.to_vec();
            unmask(&mut copy, mask);
            Cow::Owned(copy)
        }
    }
}

/// Unmasks (or masks: it is an XOR) a frame payload that starts at payload offset 0.
fn unmask(bytes: &mut [u8], mask: [u8; 4]) {
    let (words, rest) = bytes.as_chunks_mut::<4>();
    for word in words {
        for (b, m) in word.iter_mut().zip(mask) {
            *b ^= m;
        }
    }
    for (b, m) in rest.iter_mut().zip(mask) {
        *b ^= m;
    }
}

/// Writes every chunk, several per system call.
async fn write_chunks<W: AsyncWrite + Unpin>(
    dst: &mut W,
    chunks: &mut VecDeque<Bytes>,
) -> io::Result<()> {
    const MAX_SLICES: usize = 64;
    while !chunks.is_empty() {
        if chunks.len() == 1 {
            let mut only = chunks.pop_front().expect("one chunk");
            dst.write_all_buf(&mut only).await?;
            continue;
        }
        let written = {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let n = chunks
                .iter()
                .zip(slices.iter_mut())
                .map(|(chunk, slice)| *slice = IoSlice::new(chunk))
                .count();
            dst.write_vectored(&slices[..n]).await?
        };
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let mut left = written;
        while left > 0 {
            let front = chunks.front_mut().expect("written bytes were queued");
            if front.len() <= left {
                left -= front.len();
                chunks.pop_front();
            } else {
                front.advance(left);
                left = 0;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::Data;

    #[test]
    fn unmasking_matches_tungstenite_masking() {
        for len in [0, 1, 3, 4, 5, 17, 64, 1000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut frame = Frame::message(payload.clone(), OpCode::Data(Data::Binary), true);
            frame.header_mut().mask = Some([0x6d, 0xb6, 0xb2, 0x80]);
            let mut wire = Vec::new();
            frame.format(&mut wire).unwrap();
            let mut body = wire[wire.len() - len..].to_vec();
            unmask(&mut body, [0x6d, 0xb6, 0xb2, 0x80]);
            assert_eq!(body, payload);
        }
    }
}
