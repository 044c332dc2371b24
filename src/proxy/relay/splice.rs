//! Moving the bulk of a large frame from one socket to the other without copying it through
//! user space: `splice(2)` through a pipe, the kernel passes page references. On loopback this
//! removes the relay's two copies of every byte, which are most of its cost for big messages.
//! Elsewhere than Linux, [`Splicer::new`] gives `None` and the pump copies instead.

#[cfg(target_os = "linux")]
mod imp {
    use std::io;
    use std::os::fd::OwnedFd;

    use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
    use tokio::io::Interest;

    use crate::proxy::socket::SocketRef;

    /// How large a pipe to ask for (the unprivileged maximum by default); each splice moves
    /// at most this much.
    const PIPE_SIZE: i32 = 1 << 20;

    pub(in crate::proxy::relay) struct Splicer {
        read: OwnedFd,
        write: OwnedFd,
        capacity: usize,
        /// Bytes taken from the source and not yet given to the destination.
        in_pipe: usize,
    }

    impl Splicer {
        pub(in crate::proxy::relay) fn new() -> Option<Self> {
            let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).ok()?;
            let capacity = fcntl(&write, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE))
                .or_else(|_| fcntl(&write, FcntlArg::F_GETPIPE_SZ))
                .ok()?;
            Some(Self {
                read,
                write,
                capacity: usize::try_from(capacity).ok()?,
                in_pipe: 0,
            })
        }

        /// Moves exactly `n` bytes from `src` to `dst`.
        pub(in crate::proxy::relay) async fn transfer(
            &mut self,
            src: SocketRef<'_>,
            dst: SocketRef<'_>,
            mut n: usize,
        ) -> io::Result<()> {
            let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
            while n > 0 || self.in_pipe > 0 {
                let mut progressed = false;
                let room = self.capacity - self.in_pipe;
                if n > 0 && room > 0 {
                    let want = n.min(room);
                    match src.try_io(Interest::READABLE, || {
                        splice(src, None, &self.write, None, want, flags).map_err(io::Error::from)
                    }) {
                        Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                        Ok(moved) => {
                            n -= moved;
                            self.in_pipe += moved;
                            progressed = true;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e),
                    }
                }
                if self.in_pipe > 0 {
                    // More of the frame follows: let TCP fill whole segments.
                    let more = if n > 0 {
                        SpliceFFlags::SPLICE_F_MORE
                    } else {
                        SpliceFFlags::empty()
                    };
                    let pending = self.in_pipe;
                    match dst.try_io(Interest::WRITABLE, || {
                        splice(&self.read, None, dst, None, pending, flags | more)
                            .map_err(io::Error::from)
                    }) {
                        Ok(moved) => {
                            self.in_pipe -= moved;
                            progressed = true;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e),
                    }
                }
                if !progressed {
                    let can_read = n > 0 && self.in_pipe < self.capacity;
                    let can_write = self.in_pipe > 0;
                    match (can_read, can_write) {
                        (true, true) => tokio::select! {
                            ready = src.readable() => ready?,
                            ready = dst.writable() => ready?,
                        },
                        (true, false) => src.readable().await?,
                        (false, _) => dst.writable().await?,
                    }
                }
            }
            Ok(())
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::io;

    use crate::proxy::socket::SocketRef;

    pub(in crate::proxy::relay) enum Splicer {}

    impl Splicer {
        pub(in crate::proxy::relay) fn new() -> Option<Self> {
            None
        }

        pub(in crate::proxy::relay) async fn transfer(
            &mut self,
            _: SocketRef<'_>,
            _: SocketRef<'_>,
            _: usize,
        ) -> io::Result<()> {
            match *self {}
        }
    }
}

pub(super) use imp::Splicer;
