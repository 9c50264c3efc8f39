//! Byte strings of one round kept side by side in large blocks: a mirror round holds one row
//! image, key and position text per changed key, and one allocation each was a third of the
//! time spent gathering it (and their headers a good part of its memory).

/// Where one byte string lives in an [`Arena`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    block: usize,
    start: usize,
    len: usize,
}

/// Appended byte strings, never moved once written (blocks are not regrown).
#[derive(Debug, Default)]
pub struct Arena {
    blocks: Vec<Vec<u8>>,
}

/// Bytes per block; a longer string gets a block of its own.
const BLOCK_BYTES: usize = 1 << 20;

impl Arena {
    pub fn push(&mut self, bytes: &[u8]) -> Span {
        let fits = self
            .blocks
            .last()
            .is_some_and(|b| b.capacity() - b.len() >= bytes.len());
        if !fits {
            self.blocks
                .push(Vec::with_capacity(bytes.len().max(BLOCK_BYTES)));
        }
        let block_index = self.blocks.len() - 1;
        let block = &mut self.blocks[block_index];
        let start = block.len();
        block.extend_from_slice(bytes);
        Span {
            block: block_index,
            start,
            len: bytes.len(),
        }
    }

    pub fn get(&self, span: Span) -> &[u8] {
        &self.blocks[span.block][span.start..span.start + span.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_come_back_as_written_across_blocks() {
        let mut arena = Arena::default();
        let big = vec![7u8; BLOCK_BYTES + 10];
        let spans: Vec<(Span, Vec<u8>)> = (0..3000)
            .map(|i| {
                let value = if i == 1500 {
                    big.clone()
                } else {
                    format!("value {i}").repeat(i % 50 + 1).into_bytes()
                };
                (arena.push(&value), value)
            })
            .collect();
        assert!(arena.blocks.len() > 2);
        for (span, value) in &spans {
            assert_eq!(arena.get(*span), value.as_slice());
        }
        let empty = arena.push(b"");
        assert_eq!(arena.get(empty), b"");
    }
}
