//! A byte stream whose pieces another thread sends.

use std::io::{self, BufRead, Read};
use std::sync::mpsc::Receiver;

/// Reads the pieces of a channel in order, as one stream. An `Err` piece is returned as the read's
/// error; the senders going away is the end of the stream.
pub struct ChannelReader {
    rx: Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
}

impl ChannelReader {
    pub fn new(rx: Receiver<io::Result<Vec<u8>>>) -> ChannelReader {
        ChannelReader { rx, cur: Vec::new(), pos: 0 }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = buf.len().min(available.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for ChannelReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(Ok(piece)) => {
                    self.cur = piece;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(&[]),
            }
        }
        Ok(&self.cur[self.pos..])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.cur.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    #[test]
    fn pieces_read_as_one_stream_up_to_an_error_or_the_end() {
        let (tx, rx) = channel();
        for piece in [&b"ab"[..], b"", b"cde"] {
            tx.send(Ok(piece.to_vec())).unwrap();
        }
        tx.send(Err(io::Error::other("broken"))).unwrap();
        tx.send(Ok(b"f".to_vec())).unwrap();
        drop(tx);
        let mut r = ChannelReader::new(rx);
        let mut got = [0u8; 4];
        assert_eq!(r.read(&mut got).unwrap(), 2);
        let mut rest = Vec::new();
        let e = r.read_to_end(&mut rest).unwrap_err();
        assert_eq!(e.to_string(), "broken");
        assert_eq!(rest, b"cde");
        let mut last = String::new();
        assert_eq!(r.read_to_string(&mut last).unwrap(), 1, "after the error the stream goes on");
        assert_eq!(r.read(&mut got).unwrap(), 0);
    }
}
