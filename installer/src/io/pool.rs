//! A bounded pool of large aligned buffers that return home when dropped.
//!
//! Each pipeline stage that produces data owns a [`Pool`]; its buffers travel down the
//! channels and come back when the last stage drops them. The pool never holds more than
//! `max` buffers, so a slow stage downstream stalls the producers instead of growing memory.

use std::ops::{Deref, DerefMut};
use std::sync::mpsc::{channel, Receiver, Sender};

use super::aligned::AlignedBuf;

pub struct Pool {
    tx: Sender<AlignedBuf>,
    rx: Receiver<AlignedBuf>,
    size: usize,
    allocated: usize,
    max: usize,
}

impl Pool {
    pub fn new(size: usize, max: usize) -> Pool {
        let (tx, rx) = channel();
        Pool { tx, rx, size, allocated: 0, max: max.max(1) }
    }

    /// An empty buffer: a returned one, a new one while under `max`, else wait for a return.
    pub fn get(&mut self) -> Pooled {
        let buf = match self.rx.try_recv() {
            Ok(b) => b,
            Err(_) if self.allocated < self.max => {
                self.allocated += 1;
                AlignedBuf::new(self.size)
            }
            // The pool holds a sender itself, so this only waits, never disconnects.
            Err(_) => self.rx.recv().unwrap_or_else(|_| AlignedBuf::new(self.size)),
        };
        Pooled { buf: Some(buf), home: self.tx.clone() }
    }
}

/// A buffer on loan from a [`Pool`].
pub struct Pooled {
    buf: Option<AlignedBuf>,
    home: Sender<AlignedBuf>,
}

impl Deref for Pooled {
    type Target = AlignedBuf;
    fn deref(&self) -> &AlignedBuf {
        self.buf.as_ref().expect("present until drop")
    }
}

impl DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut AlignedBuf {
        self.buf.as_mut().expect("present until drop")
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(mut b) = self.buf.take() {
            b.clear();
            // The pool may be gone (pipeline torn down): then the buffer is simply freed.
            let _ = self.home.send(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_and_bounded() {
        let mut pool = Pool::new(4096, 2);
        let a = pool.get();
        let pa = a.as_ptr();
        let b = pool.get();
        drop(a);
        let c = pool.get();
        assert_eq!(c.as_ptr(), pa, "the returned buffer is reused");
        assert_eq!(pool.allocated, 2);
        drop((b, c));
    }
}
