//! What every stage thread of the pipeline shares: how it stops ([`StageError`]), how it
//! passes chunks on and fills its buffers, and how the stages' results are joined into one
//! answer ([`Join`]).

use std::io::{self, Read};
use std::sync::mpsc::SyncSender;
use std::thread::ScopedJoinHandle;

use anyhow::anyhow;

use crate::io::aligned::AlignedBuf;
use crate::io::chunks::Msg;

/// Why a stage stopped.
pub enum StageError {
    /// Its neighbour went away (that neighbour has the real reason).
    Pipe,
    Real(anyhow::Error),
}

impl From<anyhow::Error> for StageError {
    fn from(e: anyhow::Error) -> Self {
        StageError::Real(e)
    }
}

pub type StageResult<T> = Result<T, StageError>;

pub fn send(tx: &SyncSender<Msg>, m: Msg) -> StageResult<()> {
    tx.send(m).map_err(|_| StageError::Pipe)
}

/// Read until `buf` is full or the source ends; true at the end.
pub fn fill(src: &mut dyn Read, buf: &mut AlignedBuf) -> io::Result<bool> {
    while buf.len() < buf.capacity() {
        match src.read(buf.spare()) {
            Ok(0) => return Ok(true),
            Ok(n) => buf.set_len(buf.len() + n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// The results of stages, taken in stream order: the first real error is the cause, the
/// others (a neighbour gone, failures that followed) are its echoes.
#[derive(Default)]
pub struct Join {
    cause: Option<anyhow::Error>,
}

impl Join {
    /// A stage's value, or `None` when it failed (its error kept if it is the first real one).
    pub fn result<T>(&mut self, r: StageResult<T>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(StageError::Real(e)) => {
                self.cause.get_or_insert(e);
                None
            }
            Err(StageError::Pipe) => None,
        }
    }

    /// A stage thread's value, once it has ended (a panic is a real error).
    pub fn thread<T>(&mut self, h: ScopedJoinHandle<'_, StageResult<T>>) -> Option<T> {
        self.result(h.join().unwrap_or_else(|_| Err(StageError::Real(anyhow!("a pipeline thread panicked")))))
    }

    /// Why the stream stopped, for the caller of the whole pipeline.
    pub fn cause(self) -> anyhow::Error {
        self.cause.unwrap_or_else(|| anyhow!("the image pipeline stopped without saying why"))
    }

    /// Why a group of threads that is itself a stage stopped: the real error, else the pipe.
    pub fn stage_error(self) -> StageError {
        self.cause.map_or(StageError::Pipe, StageError::Real)
    }
}
