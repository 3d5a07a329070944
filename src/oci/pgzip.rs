//! Parallel gzip for layer blobs (the pigz scheme).
//!
//! A layer's gzip was one deflate stream on one core: the 7 MB binary of a
//! Go app's runtime layer took 0.15–0.2 s of a warm rebuild while the other
//! core idled. Here the input is cut into fixed 128 KiB blocks, each
//! deflated on its own thread with the previous block's last 32 KiB as its
//! dictionary and ended by a sync flush (the last one by the final block),
//! and the pieces are written in order as one gzip member: any gzip reader
//! sees an ordinary stream, about as small as a one-thread one.
//!
//! The bytes depend only on the input and the level, never on the number of
//! threads or on how the input arrives (blocks are cut by count, not by
//! write call): layer digests stay reproducible across machines.
//!
//! Written here rather than taken from `gzp`: that crate needs `'static`
//! writers (our blob writer borrows the store) and links C zlib for
//! dictionaries, while this is a hundred lines over `flate2`'s raw deflate,
//! which kiln already uses (its zlib-rs backend).

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::{Scope, ScopedJoinHandle};

use flate2::{Compress, FlushCompress, Status};

/// Input per block, as pigz: large enough that a block's sync flush costs
/// nothing measurable, small enough that a few-MB layer spreads over cores.
const BLOCK: usize = 128 * 1024;
/// The deflate window: what a block may refer back to in the one before.
const WINDOW: usize = 32 * 1024;

/// Gzips what `feed` writes into `out`, at `level`, on up to the machine's
/// cores (at most four).
pub fn encode<W, F>(out: &mut W, level: u32, feed: F) -> io::Result<()>
where
    W: Write,
    F: FnOnce(&mut dyn Write) -> io::Result<()>,
{
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(4);
    encode_with(out, level, workers, feed)
}

fn encode_with<W, F>(out: &mut W, level: u32, workers: usize, feed: F) -> io::Result<()>
where
    W: Write,
    F: FnOnce(&mut dyn Write) -> io::Result<()>,
{
    std::thread::scope(|scope| {
        let mut w = BlockWriter {
            scope,
            out,
            level,
            workers: workers.max(1),
            jobs: None,
            threads: Vec::new(),
            pending: VecDeque::new(),
            buf: Vec::with_capacity(BLOCK),
            dict: Vec::new(),
            crc: flate2::Crc::new(),
            header_written: false,
        };
        let fed = feed(&mut w);
        let finished = fed.and_then(|()| w.finish());
        // Closing the job queue ends the workers, also after an error.
        w.jobs = None;
        for t in w.threads.drain(..) {
            t.join().map_err(|_| io::Error::other("gzip worker panicked"))?;
        }
        finished
    })
}

/// One block's work: its input, the dictionary it may refer to, and where
/// its deflated bytes go.
struct Job {
    data: Vec<u8>,
    dict: Vec<u8>,
    done: SyncSender<io::Result<Vec<u8>>>,
}

struct BlockWriter<'scope, 'env, 'o, W: Write> {
    scope: &'scope Scope<'scope, 'env>,
    out: &'o mut W,
    level: u32,
    workers: usize,
    /// The queue the workers take blocks from; started with the first full
    /// block, so a small layer never spawns a thread.
    jobs: Option<SyncSender<Job>>,
    threads: Vec<ScopedJoinHandle<'scope, ()>>,
    /// Blocks sent, in input order: written out as they complete.
    pending: VecDeque<Receiver<io::Result<Vec<u8>>>>,
    buf: Vec<u8>,
    dict: Vec<u8>,
    crc: flate2::Crc,
    header_written: bool,
}

impl<W: Write> BlockWriter<'_, '_, '_, W> {
    fn header(&mut self) -> io::Result<()> {
        if !self.header_written {
            // ID, deflate, no flags, no mtime, no extra flags, OS unknown.
            self.out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255])?;
            self.header_written = true;
        }
        Ok(())
    }

    /// Hands the full buffer to a worker, keeping its tail as the next
    /// block's dictionary.
    fn send_block(&mut self) -> io::Result<()> {
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(BLOCK));
        let dict = std::mem::replace(&mut self.dict, data[data.len() - WINDOW.min(data.len())..].to_vec());
        // Two blocks in flight per worker keep every worker busy while the
        // oldest is written; more would only hold memory.
        while self.pending.len() >= 2 * self.workers {
            self.write_oldest()?;
        }
        let (done, result) = sync_channel(1);
        let jobs = match &self.jobs {
            Some(jobs) => jobs,
            None => self.start_workers(),
        };
        jobs.send(Job { data, dict, done })
            .map_err(|_| io::Error::other("gzip workers stopped"))?;
        self.pending.push_back(result);
        Ok(())
    }

    fn start_workers(&mut self) -> &SyncSender<Job> {
        let (tx, rx) = sync_channel::<Job>(self.workers);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..self.workers {
            let rx = Arc::clone(&rx);
            let level = self.level;
            self.threads.push(self.scope.spawn(move || {
                loop {
                    // The lock is held only to take the next job.
                    let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok(job) = job else { return };
                    let deflated = deflate_block(level, &job.dict, &job.data, false);
                    // The writer may have failed and gone: nothing to tell.
                    let _ = job.done.send(deflated);
                }
            }));
        }
        self.jobs.insert(tx)
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        if let Some(result) = self.pending.pop_front() {
            let deflated = result
                .recv()
                .map_err(|_| io::Error::other("gzip worker stopped"))??;
            self.out.write_all(&deflated)?;
        }
        Ok(())
    }

    /// Writes every block, the final one (deflated here: it is at most one
    /// block) and the trailer.
    fn finish(&mut self) -> io::Result<()> {
        self.header()?;
        while !self.pending.is_empty() {
            self.write_oldest()?;
        }
        let last = deflate_block(self.level, &self.dict, &self.buf, true)?;
        self.out.write_all(&last)?;
        self.out.write_all(&self.crc.sum().to_le_bytes())?;
        self.out.write_all(&self.crc.amount().to_le_bytes())?;
        self.out.flush()
    }
}

impl<W: Write> Write for BlockWriter<'_, '_, '_, W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.header()?;
        let n = data.len().min(BLOCK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        self.crc.update(&data[..n]);
        if self.buf.len() == BLOCK {
            self.send_block()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Blocks are cut by size only: flushing early would change the bytes.
        Ok(())
    }
}

/// Raw deflate of one block: after a sync flush (the stream goes on in the
/// next block) or as the stream's end.
fn deflate_block(level: u32, dict: &[u8], data: &[u8], last: bool) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(flate2::Compression::new(level), false);
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    loop {
        let consumed = c.total_in() as usize;
        let status = c
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let room_left = out.len() < out.capacity();
        match status {
            Status::StreamEnd => return Ok(out),
            // A sync flush is complete once deflate stops short of filling
            // the output with every input byte taken.
            _ if !last && room_left && c.total_in() as usize == data.len() => return Ok(out),
            _ => out.reserve(out.capacity().max(4096)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Text-like bytes that compress, with enough variety to use matches
    /// across block boundaries.
    fn sample(len: usize) -> Vec<u8> {
        let mut x: u32 = 12345;
        (0..len)
            .map(|i| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                if i % 7 == 0 { b"abcdefgh"[(x >> 16) as usize % 8] } else { b"kiln layer "[i % 11] }
            })
            .collect()
    }

    fn gzip(data: &[u8], workers: usize, piece: usize) -> Vec<u8> {
        let mut out = Vec::new();
        encode_with(&mut out, 6, workers, |w| {
            for part in data.chunks(piece.max(1)) {
                w.write_all(part)?;
            }
            Ok(())
        })
        .unwrap();
        out
    }

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut d = flate2::read::GzDecoder::new(gz);
        let mut back = Vec::new();
        d.read_to_end(&mut back).unwrap();
        // One member: nothing may follow it.
        assert!(d.into_inner().is_empty(), "bytes after the gzip member");
        back
    }

    #[test]
    fn round_trips_at_every_block_boundary() {
        for len in [0, 1, WINDOW, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK, 3 * BLOCK + BLOCK / 2] {
            let data = sample(len);
            assert_eq!(gunzip(&gzip(&data, 2, 4096)), data, "length {len}");
        }
    }

    #[test]
    fn bytes_depend_on_neither_threads_nor_write_sizes() {
        let data = sample(5 * BLOCK + 777);
        let reference = gzip(&data, 1, data.len());
        for (workers, piece) in [(1, 1000), (2, 4096), (4, 65_537), (3, BLOCK)] {
            assert_eq!(gzip(&data, workers, piece), reference, "{workers} workers, {piece}-byte writes");
        }
    }

    #[test]
    fn blocks_use_the_previous_block_as_dictionary() {
        // 16 KiB of noise, repeated over two blocks: one deflate stream
        // stores it once; without the dictionary the second block would
        // store it again.
        let mut x: u64 = 99;
        let noise: Vec<u8> = (0..16 * 1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let data = noise.repeat(2 * BLOCK / noise.len());
        let parallel = gzip(&data, 2, 8192).len();
        let mut single = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        single.write_all(&data).unwrap();
        let single = single.finish().unwrap().len();
        assert!(parallel < noise.len() + noise.len() / 4, "parallel {parallel} bytes for {} of noise", noise.len());
        assert!(parallel <= single + single / 100 + 64, "parallel {parallel}, one stream {single}");
    }

    #[test]
    fn a_failing_writer_fails_the_encode() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let data = sample(6 * BLOCK);
        let err = encode_with(&mut Full, 6, 2, |w| w.write_all(&data)).unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
    }
}
