//! A compact binary row encoding for rows only this crate reads (timeline entries, the
//! per-applicant state of the dashboard and the reviewer queue, ...).
//!
//! sled's cost per row grows with its size (every insert rewrites its leaf in the log now and
//! then), and JSON spends most of a small row on field names and quoting. Each encoded row
//! starts with a layout tag byte, so a row written by an older layout (JSON, starting with
//! `{`) is refused with a clear error instead of being misread: such read models need one
//! rebuild. Integers are LEB128 varints; strings are a varint length and UTF-8 bytes; an
//! optional value is a presence byte (or, for strings, length + 1, 0 meaning absent).
use chrono::{DateTime, Utc};
use uuid::Uuid;
use vetted_domain::ApplicantStatus;

use crate::ProjectionError;

/// Appends the encoding of values to a byte buffer.
pub(crate) struct Writer<'a>(pub(crate) &'a mut Vec<u8>);

impl Writer<'_> {
    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }

    pub(crate) fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(v as u8)
    }

    pub(crate) fn varint(&mut self, mut v: u64) -> &mut Self {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
        self
    }

    /// A signed integer, zigzag-encoded so small negative numbers stay short.
    pub(crate) fn svarint(&mut self, v: i64) -> &mut Self {
        self.varint(((v << 1) ^ (v >> 63)) as u64)
    }

    pub(crate) fn str(&mut self, s: &str) -> &mut Self {
        self.varint(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
        self
    }

    pub(crate) fn opt_str(&mut self, s: Option<&str>) -> &mut Self {
        match s {
            None => self.u8(0),
            Some(s) => {
                self.varint(s.len() as u64 + 1);
                self.0.extend_from_slice(s.as_bytes());
                self
            }
        }
    }

    pub(crate) fn uuid(&mut self, id: &Uuid) -> &mut Self {
        self.0.extend_from_slice(id.as_bytes());
        self
    }

    /// A moment, exactly (seconds and nanoseconds, leap seconds included).
    pub(crate) fn time(&mut self, t: &DateTime<Utc>) -> &mut Self {
        self.svarint(t.timestamp())
            .varint(u64::from(t.timestamp_subsec_nanos()))
    }

    /// A status, as its index in `ApplicantStatus::ALL`.
    pub(crate) fn status(&mut self, status: ApplicantStatus) -> &mut Self {
        let i = ApplicantStatus::ALL.iter().position(|s| *s == status);
        self.u8(i.map_or(u8::MAX, |i| i as u8))
    }

    pub(crate) fn opt_time(&mut self, t: Option<&DateTime<Utc>>) -> &mut Self {
        match t {
            None => self.u8(0),
            Some(t) => self.u8(1).time(t),
        }
    }
}

/// Reads values back in the order they were written; every read checks bounds.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    /// The row's key, for error messages.
    key: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(key: &'a [u8], bytes: &'a [u8]) -> Self {
        Reader { bytes, at: 0, key }
    }

    /// Bytes read so far.
    pub(crate) fn position(&self) -> usize {
        self.at
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.at)
    }

    /// Whether every byte was read.
    pub(crate) fn is_done(&self) -> bool {
        self.at >= self.bytes.len()
    }

    /// A decoding error at the current position.
    pub(crate) fn error(&self, reason: impl std::fmt::Display) -> ProjectionError {
        ProjectionError::Decode {
            key: String::from_utf8_lossy(self.key).into_owned(),
            reason: format!("{reason} (byte {})", self.at),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProjectionError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| self.error("row ends early"))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    /// Checks the layout tag a row (or entry) starts with.
    pub(crate) fn tag(&mut self, expected: u8) -> Result<(), ProjectionError> {
        match self.u8()? {
            t if t == expected => Ok(()),
            b'{' => Err(self.error(
                "row in the older JSON layout; rebuild this projection (`vetted projections rebuild <name>`)",
            )),
            t => Err(self.error(format_args!("unknown row layout {t}, expected {expected}"))),
        }
    }

    pub(crate) fn u8(&mut self) -> Result<u8, ProjectionError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn bool(&mut self) -> Result<bool, ProjectionError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(self.error(format_args!("{b} is not a boolean"))),
        }
    }

    pub(crate) fn varint(&mut self) -> Result<u64, ProjectionError> {
        // Most varints are one byte (lengths, versions, small counts).
        if let Some(&b) = self.bytes.get(self.at) {
            if b < 0x80 {
                self.at += 1;
                return Ok(u64::from(b));
            }
        }
        let mut out = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            out |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(out);
            }
        }
        Err(self.error("varint longer than 64 bits"))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, ProjectionError> {
        let v = self.varint()?;
        u32::try_from(v).map_err(|_| self.error(format_args!("{v} does not fit 32 bits")))
    }

    pub(crate) fn svarint(&mut self) -> Result<i64, ProjectionError> {
        let v = self.varint()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    fn utf8(&mut self, len: u64) -> Result<&'a str, ProjectionError> {
        let len = usize::try_from(len).map_err(|_| self.error("string too long"))?;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map_err(|e| self.error(e))
    }

    pub(crate) fn str(&mut self) -> Result<&'a str, ProjectionError> {
        let len = self.varint()?;
        self.utf8(len)
    }

    pub(crate) fn opt_str(&mut self) -> Result<Option<&'a str>, ProjectionError> {
        match self.varint()? {
            0 => Ok(None),
            n => self.utf8(n - 1).map(Some),
        }
    }

    /// An optional string's bytes, not checked for UTF-8 (for scans that only compare them).
    pub(crate) fn opt_bytes(&mut self) -> Result<Option<&'a [u8]>, ProjectionError> {
        match self.varint()? {
            0 => Ok(None),
            n => {
                let len = usize::try_from(n - 1).map_err(|_| self.error("string too long"))?;
                self.take(len).map(Some)
            }
        }
    }

    /// Skips a string without checking it.
    pub(crate) fn skip_str(&mut self) -> Result<(), ProjectionError> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| self.error("string too long"))?;
        self.take(len).map(|_| ())
    }

    /// Skips `n` bytes.
    pub(crate) fn skip(&mut self, n: usize) -> Result<(), ProjectionError> {
        self.take(n).map(|_| ())
    }

    /// Skips a moment written by [`Writer::time`] without building it.
    pub(crate) fn skip_time(&mut self) -> Result<(), ProjectionError> {
        self.varint()?;
        self.varint().map(|_| ())
    }

    pub(crate) fn string(&mut self) -> Result<String, ProjectionError> {
        self.str().map(str::to_string)
    }

    pub(crate) fn opt_string(&mut self) -> Result<Option<String>, ProjectionError> {
        Ok(self.opt_str()?.map(str::to_string))
    }

    pub(crate) fn uuid(&mut self) -> Result<Uuid, ProjectionError> {
        let bytes = self.take(16)?;
        Uuid::from_slice(bytes).map_err(|e| self.error(e))
    }

    pub(crate) fn time(&mut self) -> Result<DateTime<Utc>, ProjectionError> {
        let secs = self.svarint()?;
        let nanos = self.u32()?;
        DateTime::from_timestamp(secs, nanos)
            .ok_or_else(|| self.error(format_args!("{secs}.{nanos} is not a moment")))
    }

    pub(crate) fn status(&mut self) -> Result<ApplicantStatus, ProjectionError> {
        let i = self.u8()?;
        ApplicantStatus::ALL
            .get(usize::from(i))
            .copied()
            .ok_or_else(|| self.error(format_args!("unknown status {i}")))
    }

    pub(crate) fn opt_time(&mut self) -> Result<Option<DateTime<Utc>>, ProjectionError> {
        match self.bool()? {
            false => Ok(None),
            true => self.time().map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_back_exactly_and_short_or_old_rows_are_refused() {
        let t = DateTime::from_timestamp(1_764_000_000, 123_456_789).unwrap();
        let before_1970 = DateTime::from_timestamp(-86_400, 5).unwrap();
        let id = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        let mut row = Vec::new();
        Writer(&mut row)
            .u8(7)
            .bool(true)
            .varint(u64::MAX)
            .svarint(-5)
            .svarint(i64::MIN)
            .str("héllo")
            .opt_str(None)
            .opt_str(Some(""))
            .uuid(&id)
            .time(&t)
            .time(&before_1970)
            .opt_time(None)
            .opt_time(Some(&t))
            .status(ApplicantStatus::Approved);
        let mut r = Reader::new(b"k", &row);
        r.tag(7).unwrap();
        assert!(r.bool().unwrap());
        assert_eq!(r.varint().unwrap(), u64::MAX);
        assert_eq!(r.svarint().unwrap(), -5);
        assert_eq!(r.svarint().unwrap(), i64::MIN);
        assert_eq!(r.str().unwrap(), "héllo");
        assert_eq!(r.opt_string().unwrap(), None);
        assert_eq!(r.opt_string().unwrap(), Some(String::new()));
        assert_eq!(r.uuid().unwrap(), id);
        assert_eq!(r.time().unwrap(), t);
        assert_eq!(r.time().unwrap(), before_1970);
        assert_eq!(r.opt_time().unwrap(), None);
        assert_eq!(r.opt_time().unwrap(), Some(t));
        assert_eq!(r.status().unwrap(), ApplicantStatus::Approved);
        assert!(r.is_done());

        let mut short = Reader::new(b"k", &row[..row.len() - 3]);
        short.tag(7).unwrap();
        let err = (|| -> Result<(), ProjectionError> {
            loop {
                short.varint()?;
            }
        })();
        assert!(err.unwrap_err().to_string().contains("ends early"));

        let old = br#"{"at":"2026-11-22T00:00:00Z"}"#;
        let err = Reader::new(b"tl/x", old).tag(7).unwrap_err().to_string();
        assert!(err.contains("rebuild"), "{err}");
    }
}
