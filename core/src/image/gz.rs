//! gzip (RFC 1952) members, decompressed without their CRC-32: the layer's diff_id (SHA-256 of
//! the whole uncompressed stream) already verifies every byte, and the CRC cost 7% of an
//! import's CPU. Members follow each other like Go's multistream reader (what docker writes);
//! anything else after a member is an error, as is a truncated member or a wrong ISIZE.

use std::io::{self, BufRead, Read};

use flate2::{Decompress, FlushDecompress, Status};

pub(crate) struct GzMembers<R> {
    inner: R,
    z: Decompress,
    state: State,
    member_out: u64,
}

#[derive(PartialEq)]
enum State {
    Header,
    Body,
    Done,
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("gzip: {msg}"))
}

impl<R: BufRead> GzMembers<R> {
    pub(crate) fn new(inner: R) -> Self {
        GzMembers { inner, z: Decompress::new(false), state: State::Header, member_out: 0 }
    }

    fn byte(&mut self) -> io::Result<u8> {
        let mut b = [0u8; 1];
        self.inner.read_exact(&mut b).map_err(|_| bad("truncated header"))?;
        Ok(b[0])
    }

    fn skip_zstring(&mut self) -> io::Result<()> {
        for _ in 0..65536 {
            if self.byte()? == 0 {
                return Ok(());
            }
        }
        Err(bad("a header name or comment longer than 64 KiB"))
    }

    fn header(&mut self) -> io::Result<()> {
        let mut h = [0u8; 10];
        let magic = self.inner.fill_buf()?;
        if !(magic.starts_with(&[0x1f, 0x8b]) || magic == [0x1f]) {
            return Err(bad("not a gzip member (data after the last member?)"));
        }
        self.inner.read_exact(&mut h).map_err(|_| bad("truncated header"))?;
        if h[0] != 0x1f || h[1] != 0x8b {
            return Err(bad("not a gzip member (data after the last member?)"));
        }
        if h[2] != 8 {
            return Err(bad("unknown compression method"));
        }
        let flags = h[3];
        if flags & 0xe0 != 0 {
            return Err(bad("reserved header flags set"));
        }
        if flags & 0x04 != 0 {
            let len = u16::from_le_bytes([self.byte()?, self.byte()?]);
            io::copy(&mut (&mut self.inner).take(len as u64), &mut io::sink())?;
        }
        if flags & 0x08 != 0 {
            self.skip_zstring()?;
        }
        if flags & 0x10 != 0 {
            self.skip_zstring()?;
        }
        if flags & 0x02 != 0 {
            self.byte()?;
            self.byte()?;
        }
        self.z.reset(false);
        self.member_out = 0;
        self.state = State::Body;
        Ok(())
    }

    fn trailer(&mut self) -> io::Result<()> {
        let mut t = [0u8; 8];
        self.inner.read_exact(&mut t).map_err(|_| bad("truncated trailer"))?;
        if u32::from_le_bytes([t[4], t[5], t[6], t[7]]) != self.member_out as u32 {
            return Err(bad("the trailer's size does not match the data"));
        }
        self.state = if self.inner.fill_buf()?.is_empty() { State::Done } else { State::Header };
        Ok(())
    }
}

impl<R: BufRead> Read for GzMembers<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match self.state {
                State::Done => return Ok(0),
                State::Header => self.header()?,
                State::Body => {
                    let input = self.inner.fill_buf()?;
                    let eof = input.is_empty();
                    let (in0, out0) = (self.z.total_in(), self.z.total_out());
                    let status = self.z.decompress(input, buf, FlushDecompress::None).map_err(|e| bad(&e.to_string()))?;
                    let consumed = (self.z.total_in() - in0) as usize;
                    let produced = (self.z.total_out() - out0) as usize;
                    self.inner.consume(consumed);
                    self.member_out += produced as u64;
                    if status == Status::StreamEnd {
                        self.trailer()?;
                    } else if consumed == 0 && produced == 0 {
                        return Err(if eof { bad("truncated data") } else { bad("no progress (corrupt data)") });
                    }
                    if produced > 0 {
                        return Ok(produced);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn read_all(b: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        GzMembers::new(b).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn members_garbage_truncation_and_size() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        assert_eq!(read_all(&gz(&data)).unwrap(), data);
        let two = [gz(b"hello "), gz(b"world")].concat();
        assert_eq!(read_all(&two).unwrap(), b"hello world");
        let garbage = [gz(b"x"), b"garbage".to_vec()].concat();
        assert!(read_all(&garbage).unwrap_err().to_string().contains("not a gzip member"));
        let full = gz(&data);
        let err = read_all(&full[..full.len() / 2]).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
        let mut wrong = gz(b"abc");
        let n = wrong.len();
        wrong[n - 4] ^= 1; // ISIZE
        assert!(read_all(&wrong).unwrap_err().to_string().contains("size"));
    }
}
