//! Small building blocks of the image pipeline, one concern per file: aligned buffers, a
//! bounded buffer pool, a reader over a channel of chunks, format sniffing, decoders.

pub mod aligned;
pub mod chunks;
pub mod decompress;
pub mod pool;
pub mod sniff;
pub mod zstd_frames;
