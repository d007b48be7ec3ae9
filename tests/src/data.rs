//! Test data generated on the fly: nothing is held in memory, the same seed gives the same
//! bytes (so a receiver can check what it got).

use std::{
    pin::Pin,
    task::{Context, Poll},
};

/// `size` pseudo-random bytes (xorshift64 from `seed`), as an `AsyncRead`.
#[derive(Debug, Clone)]
pub struct Generated {
    left: u64,
    state: u64,
}

impl Generated {
    /// `size` bytes from `seed` (not zero).
    pub fn new(size: u64, seed: u64) -> Self {
        Self {
            left: size,
            state: seed.max(1),
        }
    }

    /// Fills the front of `buf` with the next bytes; how many (0 at the end).
    pub fn fill(&mut self, buf: &mut [u8]) -> usize {
        let n = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        for chunk in buf[..n].chunks_mut(8) {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            chunk.copy_from_slice(&self.state.to_le_bytes()[..chunk.len()]);
        }
        self.left -= n as u64;
        n
    }
}

impl futures::AsyncRead for Generated {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(self.fill(buf)))
    }
}
